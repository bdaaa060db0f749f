//! A Cosmos DB client from an endpoint and an account key, for the hosts
//! (the CLI, the live tests). Applications that already have a client pass
//! their own container clients to the writer and the processor.

use azure_data_cosmos::clients::{ContainerClient, CosmosClient};
use azure_data_cosmos::options::Region;
use azure_data_cosmos::{AccountEndpoint, AccountReference, CosmosClientBuilder, RoutingStrategy};

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The endpoint is not a URL.
    #[error("invalid Cosmos DB endpoint {endpoint:?}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// The parse error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The SDK refused to build the client, or a container could not be resolved.
    #[error("{what} failed")]
    Client {
        /// What was being done.
        what: String,
        /// The SDK error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A client for the account at `endpoint` (`https://<account>.documents.azure.com:443/`,
/// or the Docker emulator's), authenticated with an account `key`, routed
/// to the regions nearest `region` (e.g. `westeurope`).
pub async fn cosmos_client_with_key(
    endpoint: &str,
    key: String,
    region: &str,
) -> Result<CosmosClient, ConnectError> {
    let parsed = endpoint
        .parse::<AccountEndpoint>()
        .map_err(|e| ConnectError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
            source: Box::new(e),
        })?;
    let account = AccountReference::with_authentication_key(parsed, key);
    CosmosClientBuilder::new()
        .build(
            account,
            RoutingStrategy::ProximityTo(Region::new(region.to_owned())),
        )
        .await
        .map_err(|e| ConnectError::Client {
            what: "building the Cosmos DB client".into(),
            source: Box::new(e),
        })
}

/// The client of container `container` in database `database` (its metadata
/// is read once, so a missing container is an error here).
pub async fn container_client(
    client: &CosmosClient,
    database: &str,
    container: &str,
) -> Result<ContainerClient, ConnectError> {
    client
        .database_client(database.to_owned())
        .container_client(container.to_owned(), None)
        .await
        .map_err(|e| ConnectError::Client {
            what: format!("opening container {database}/{container}"),
            source: Box::new(e),
        })
}
