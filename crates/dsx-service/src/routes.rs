//! One declaration per HTTP route (method, path, access rule, operation id, summary, request
//! and answer models, success status, handler), from which a service derives its router, the
//! access layer in front of each route and its OpenAPI document, so none of them can list a
//! route the others miss. dsx-connect's table is in its `api.rs`, a connector's in
//! `routes.rs`.
//!
//! A plain table rather than aide or utoipa: aide's released line builds on schemars 0.9
//! (schemars 1, which dsx-model derives, only in a pre-release), and utoipa derives its own
//! schemas, so either would mean a second schema derivation of every wire model or a
//! pre-release dependency, plus macro compile time, for what is a list and a loop here.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// Adds a model's schema to a document's components and answers its reference.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// One route of a service with state `S` and access rules `A`.
pub struct Route<S, A> {
    pub method: Method,
    /// As the service's table spells it (each service says what it is relative to).
    pub path: &'static str,
    pub access: A,
    /// camelCase, unique within the service.
    pub operation_id: &'static str,
    pub summary: &'static str,
    /// The JSON request body's model.
    pub body: Option<SchemaFn>,
    /// The success answer's model.
    pub response: Option<SchemaFn>,
    /// The success answer's media type.
    pub media: &'static str,
    pub status: u16,
    pub handler: MethodRouter<S>,
}

impl<S: Clone + Send + Sync + 'static, A> Route<S, A> {
    pub fn new<H, T>(
        method: Method,
        path: &'static str,
        access: A,
        operation_id: &'static str,
        summary: &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        Route {
            method,
            path,
            access,
            operation_id,
            summary,
            body: None,
            response: None,
            media: "application/json",
            status: 200,
            handler: on(filter, handler),
        }
    }

    pub fn body<T: JsonSchema>(mut self) -> Self {
        self.body = Some(schema_of::<T>);
        self
    }

    pub fn returns<T: JsonSchema>(mut self) -> Self {
        self.response = Some(schema_of::<T>);
        self
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn media(mut self, media: &'static str) -> Self {
        self.media = media;
        self
    }
}

/// The router of `routes`: one group per access rule, each given its layers by `layer`
/// (a group's route layers run only for its own routes). `path` turns a table path into the
/// routed one. Two methods of one path must share a rule: axum merges them into one method
/// router within a group, and refuses the same path in two merged groups.
pub fn router<S, A>(
    routes: Vec<Route<S, A>>,
    path: impl Fn(&str) -> String,
    mut layer: impl FnMut(A, Router<S>) -> Router<S>,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    A: Copy + PartialEq,
{
    let mut groups: Vec<(A, Router<S>)> = Vec::new();
    for route in routes {
        let index = match groups.iter().position(|(access, _)| *access == route.access) {
            Some(i) => i,
            None => {
                groups.push((route.access, Router::new()));
                groups.len() - 1
            }
        };
        let group = std::mem::take(&mut groups[index].1);
        groups[index].1 = group.route(&path(route.path), route.handler);
    }
    groups.into_iter().fold(Router::new(), |out, (access, group)| out.merge(layer(access, group)))
}

/// Operation ids a reader can use: camelCase words (nothing derived from a path), each once.
/// `Err` names the first that is not.
pub fn check_operation_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    for id in ids {
        if !id.starts_with(|c: char| c.is_ascii_lowercase()) || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("operation id {id:?} is not camelCase"));
        }
        if !seen.insert(id) {
            return Err(format!("operation id {id} is used twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn groups_get_their_own_layers_and_paths_merge_methods() {
        use axum::body::Body;
        use axum::http::{Request, StatusCode};
        use tower::ServiceExt;

        let routes: Vec<Route<(), bool>> = vec![
            Route::new(Method::GET, "a", true, "getA", "", || async { "a" }),
            Route::new(Method::PUT, "a", true, "putA", "", || async { "put a" }),
            Route::new(Method::GET, "b", false, "getB", "", || async { "b" }),
        ];
        let router = router(
            routes,
            |p| format!("/{p}"),
            |locked, group| {
                if locked {
                    group.route_layer(axum::middleware::from_fn(|_: Request<Body>, _: axum::middleware::Next| async {
                        StatusCode::UNAUTHORIZED
                    }))
                } else {
                    group
                }
            },
        );
        let status = |method: Method, uri: &'static str| {
            let router = router.clone();
            async move {
                let req = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
                router.oneshot(req).await.unwrap().status()
            }
        };
        assert_eq!(status(Method::GET, "/a").await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(Method::PUT, "/a").await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(Method::GET, "/b").await, StatusCode::OK);
        assert_eq!(status(Method::GET, "/c").await, StatusCode::NOT_FOUND);
    }

    #[test]
    fn operation_ids_are_camel_case_and_unique() {
        assert_eq!(check_operation_ids(["readFile", "getV2"]), Ok(()));
        for bad in [&["post connectors/register"][..], &["ReadFile"], &["read_file"], &[""], &["a", "a"]] {
            assert!(check_operation_ids(bad.iter().copied()).is_err(), "{bad:?}");
        }
    }
}
