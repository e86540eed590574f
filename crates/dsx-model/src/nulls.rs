//! Python 1.x peers send `null` for unset fields; these read `null` like an absent field.

use serde::{Deserialize, Deserializer};
use uuid::Uuid;

/// `null` (or absent, with `#[serde(default)]`) becomes `T::default()`.
pub(crate) fn or_default<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(de)?.unwrap_or_default())
}

/// A `null` connector uuid gets a fresh one, as an absent one does.
pub(crate) fn uuid_or_new<'de, D: Deserializer<'de>>(de: D) -> Result<Uuid, D::Error> {
    Ok(Option::<Uuid>::deserialize(de)?.unwrap_or_else(Uuid::new_v4))
}

/// `requested_action.type` is a free string on the wire: trimmed, lower-cased, `move_tag` read
/// as `movetag`; an empty or unknown value means "the connector's configured action", never an
/// error (the Python connectors behave the same way).
pub(crate) fn lenient_item_action<'de, D: Deserializer<'de>>(de: D) -> Result<Option<crate::ItemAction>, D::Error> {
    let raw = Option::<serde_json::Value>::deserialize(de)?;
    Ok(raw.as_ref().and_then(serde_json::Value::as_str).and_then(|s| s.parse().ok()))
}
