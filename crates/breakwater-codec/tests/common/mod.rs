//! Shared by the integration tests: a fake Schema Registry and one sample of every record.
//!
//! The fake answers the two calls the codec makes, with the bodies a Confluent registry sends
//! (as in schema_registry_converter's own tests): `POST /subjects/{subject}/versions` with
//! `{"id":N}`, and `GET /schemas/ids/{id}?deleted=true` with `{"schema":"<escaped avsc>"}`.
//! After `others_unknown`, any other schema id is a 404 with error code 40403.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses part of this module

use breakwater_codec::{AvroCodec, SrSettings, WireRecord};
use mockito::{Matcher, ServerGuard};

pub mod samples;

/// A mockito server standing in for the Schema Registry.
pub struct FakeRegistry {
    pub server: ServerGuard,
}

impl FakeRegistry {
    pub async fn start() -> FakeRegistry {
        FakeRegistry {
            server: mockito::Server::new_async().await,
        }
    }

    /// Registering `T`'s schema under `<topic>-value` answers `id`, and `id` resolves to it.
    pub async fn knows<T: WireRecord>(&mut self, id: u32, topic: &str) -> &mut Self {
        let raw = T::wire_schema().unwrap().raw();
        self.server
            .mock("POST", format!("/subjects/{topic}-value/versions").as_str())
            .with_status(200)
            .with_header("content-type", "application/vnd.schemaregistry.v1+json")
            .with_body(format!(r#"{{"id":{id}}}"#))
            .create_async()
            .await;
        self.serves(id, raw).await
    }

    /// `GET /schemas/ids/{id}` answers `raw`.
    pub async fn serves(&mut self, id: u32, raw: &str) -> &mut Self {
        self.server
            .mock("GET", format!("/schemas/ids/{id}?deleted=true").as_str())
            .with_status(200)
            .with_header("content-type", "application/vnd.schemaregistry.v1+json")
            .with_body(serde_json::json!({ "schema": raw }).to_string())
            .create_async()
            .await;
        self
    }

    /// Every id not served so far is unknown. Call last: mockito matches mocks in the order
    /// they were created.
    pub async fn others_unknown(&mut self) -> &mut Self {
        self.server
            .mock("GET", Matcher::Regex(r"^/schemas/ids/\d+".to_owned()))
            .with_status(404)
            .with_header("content-type", "application/vnd.schemaregistry.v1+json")
            .with_body(r#"{"error_code":40403,"message":"Schema not found"}"#)
            .create_async()
            .await;
        self
    }

    pub fn codec(&self) -> AvroCodec {
        AvroCodec::new(
            SrSettings::new_builder(self.server.url())
                .no_proxy()
                .build()
                .unwrap(),
        )
    }
}
