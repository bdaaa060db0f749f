//! Cosmos DB service limits that the writer checks before any call.

/// Most operations in one transactional batch ("Azure Cosmos DB service
/// quotas", per-request limits: 100 operations per transactional batch).
pub const MAX_BATCH_OPERATIONS: usize = 100;

/// Largest transactional batch request body ("Azure Cosmos DB service
/// quotas": 2 MB per transactional batch; the service answers 413 above it).
/// The writer measures the request body exactly as the SDK serialises it.
pub const MAX_BATCH_REQUEST_BYTES: usize = 2 * 1024 * 1024;
