//! The embedded store's side of one capability (see the trait for the contract).

use super::*;

#[async_trait]
impl Registry for EmbeddedStore {
    async fn put_presence(&self, connector: &Connector, ttl: Duration) -> StoreResult<()> {
        let json = serde_json::to_vec(connector).map_err(corrupt)?;
        let key = connector.uuid.to_string();
        self.run(move |inner| {
            inner.write(true, |txn| {
                let mut table = txn.open_table(PRESENCE).map_err(unavailable)?;
                table.insert(key.as_str(), (expiry_ms(ttl), json.as_slice())).map_err(unavailable)?;
                Ok(())
            })
        })
        .await
    }

    async fn get_presence(&self, uuid: Uuid) -> StoreResult<Option<Connector>> {
        self.read_now(move |inner| inner.read_presence(&uuid.to_string()))
    }

    async fn list_presence(&self) -> StoreResult<Vec<Connector>> {
        self.run(|inner| {
            let txn = inner.db()?.begin_read().map_err(unavailable)?;
            let table = txn.open_table(PRESENCE).map_err(unavailable)?;
            let now = now_millis();
            let mut out = Vec::new();
            for row in table.iter().map_err(unavailable)? {
                let (_, value) = row.map_err(unavailable)?;
                let (exp, json) = value.value();
                if live(exp, now) {
                    match serde_json::from_slice(json) {
                        Ok(connector) => out.push(connector),
                        // One unreadable entry (e.g. written by another version) must not hide the rest.
                        Err(err) => tracing::warn!(error = %err, "skipping unreadable presence entry"),
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_presence(&self, uuid: Uuid) -> StoreResult<bool> {
        self.run(move |inner| {
            inner.write(true, |txn| {
                let mut table = txn.open_table(PRESENCE).map_err(unavailable)?;
                let removed = table.remove(uuid.to_string().as_str()).map_err(unavailable)?;
                Ok(removed.is_some_and(|g| live(g.value().0, now_millis())))
            })
        })
        .await
    }

    async fn put_registration(&self, uuid: Uuid, record: &RegistrationRecord) -> StoreResult<()> {
        let record = record.clone();
        self.run(move |inner| {
            inner.write(true, |txn| {
                put_json(&mut txn.open_table(REGISTRATIONS).map_err(unavailable)?, &uuid.to_string(), &record)
            })
        })
        .await
    }

    async fn get_registration(&self, uuid: Uuid) -> StoreResult<Option<RegistrationRecord>> {
        self.run(move |inner| {
            let txn = inner.db()?.begin_read().map_err(unavailable)?;
            let table = txn.open_table(REGISTRATIONS).map_err(unavailable)?;
            let value = table.get(uuid.to_string().as_str()).map_err(unavailable)?;
            value.map(|g| serde_json::from_slice(g.value()).map_err(corrupt)).transpose()
        })
        .await
    }

    async fn list_registrations(&self) -> StoreResult<Vec<(Uuid, RegistrationRecord)>> {
        self.run(|inner| {
            let txn = inner.db()?.begin_read().map_err(unavailable)?;
            let table = txn.open_table(REGISTRATIONS).map_err(unavailable)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(unavailable)? {
                let (key, value) = row.map_err(unavailable)?;
                let Ok(uuid) = key.value().parse::<Uuid>() else { continue };
                out.push((uuid, serde_json::from_slice(value.value()).map_err(corrupt)?));
            }
            Ok(out)
        })
        .await
    }

    async fn delete_registration(&self, uuid: Uuid) -> StoreResult<()> {
        self.run(move |inner| {
            inner.write(true, |txn| {
                txn.open_table(REGISTRATIONS)
                    .map_err(unavailable)?
                    .remove(uuid.to_string().as_str())
                    .map_err(unavailable)?;
                Ok(())
            })
        })
        .await
    }

    async fn put_state(&self, uuid: Uuid, ns: &str, key: &str, value: &str) -> StoreResult<()> {
        let (ns, key, value) = (ns.to_owned(), key.to_owned(), value.to_owned());
        self.run(move |inner| {
            inner.write(true, |txn| {
                let mut table = txn.open_table(STATE).map_err(unavailable)?;
                table
                    .insert((uuid.to_string().as_str(), ns.as_str(), key.as_str()), value.as_str())
                    .map_err(unavailable)?;
                Ok(())
            })
        })
        .await
    }

    async fn get_state(&self, uuid: Uuid, ns: &str, key: &str) -> StoreResult<Option<String>> {
        let (ns, key) = (ns.to_owned(), key.to_owned());
        self.run(move |inner| {
            let txn = inner.db()?.begin_read().map_err(unavailable)?;
            let table = txn.open_table(STATE).map_err(unavailable)?;
            let value = table.get((uuid.to_string().as_str(), ns.as_str(), key.as_str())).map_err(unavailable)?;
            Ok(value.map(|g| g.value().to_owned()))
        })
        .await
    }
}
