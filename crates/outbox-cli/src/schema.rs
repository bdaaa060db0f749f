//! `outbox schema`: an event type's payload schema as the document
//! EventBridge's schema registry takes, for producers whose payload schema
//! is a JSON Schema file (Rust producers with typed events call
//! `outbox_core::schema::registry_schemas` instead).

use std::path::PathBuf;

use outbox_core::schema::registry_schema_from_json;

/// What `outbox schema` takes.
#[derive(Debug, Clone, clap::Args)]
pub struct SchemaArgs {
    /// The events' source, e.g. com.example.orders.
    #[arg(long)]
    pub source: String,
    /// The event type, e.g. OrderPlaced.
    #[arg(long)]
    pub event_type: String,
    /// A JSON Schema file describing the payload (draft 2020-12 or 7; its
    /// `$defs` or `definitions` are kept).
    #[arg(long)]
    pub payload_schema: PathBuf,
}

/// Why no document was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON.
    #[error("{path} is not JSON")]
    Json {
        /// The file.
        path: PathBuf,
        /// Where it stopped parsing.
        #[source]
        source: serde_json::Error,
    },
    /// The schema cannot be made a registry document.
    #[error("{path}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        #[source]
        source: outbox_core::EnvelopeError,
    },
    /// The document could not be written out.
    #[error("cannot write the document")]
    Write(#[source] std::io::Error),
}

/// Writes the registry document (OpenAPI 3, registry type `OpenApi3`) to
/// `out`; its name is `<source>@<event type>`.
pub fn run(args: &SchemaArgs, out: &mut impl std::io::Write) -> Result<String, SchemaError> {
    let path = args.payload_schema.clone();
    let text = std::fs::read_to_string(&path).map_err(|source| SchemaError::Read {
        path: path.clone(),
        source,
    })?;
    let payload = serde_json::from_str(&text).map_err(|source| SchemaError::Json {
        path: path.clone(),
        source,
    })?;
    let document = registry_schema_from_json(&args.source, &args.event_type, payload)
        .map_err(|source| SchemaError::Schema { path, source })?;
    serde_json::to_writer_pretty(&mut *out, &document.content).map_err(|e| SchemaError::Write(e.into()))?;
    writeln!(out).map_err(SchemaError::Write)?;
    Ok(document.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(file: &std::path::Path) -> SchemaArgs {
        SchemaArgs {
            source: "com.example.orders".into(),
            event_type: "OrderPlaced".into(),
            payload_schema: file.to_owned(),
        }
    }

    #[test]
    fn a_payload_schema_file_becomes_a_registry_document() {
        let dir = std::env::temp_dir().join(format!("outbox-schema-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("placed.json");
        std::fs::write(
            &file,
            r#"{"type":"object","properties":{"total":{"type":"integer"}}}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        let name = run(&args(&file), &mut out).unwrap();
        assert_eq!(name, "com.example.orders@OrderPlaced");
        let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            doc["components"]["schemas"]["OrderPlaced"]["properties"]["total"]["type"],
            "integer"
        );

        std::fs::write(&file, "{ not json").unwrap();
        let err = run(&args(&file), &mut Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), format!("{} is not JSON", file.display()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
