// outbox-relay on Azure: a Cosmos DB account with the outbox container (TTL
// on, per-document `ttl`), the lease containers, and a Linux function app
// running the custom handler `outbox-cosmos-function` behind the Cosmos DB
// trigger (infra/azure/relay/function.json). Events go to Amazon EventBridge;
// quarantined documents to an SQS queue.
//
//   az deployment group create -g <rg> -f infra/azure/main.bicep \
//     -p eventBusName=orders-bus quarantineQueueUrl=<url> awsRegion=eu-west-1 \
//        awsAccessKeyId=<id> awsSecretAccessKey=<secret>

targetScope = 'resourceGroup'

@description('Where everything is deployed.')
param location string = resourceGroup().location

@description('Prefix of resource names: lowercase letters and digits.')
@minLength(3)
@maxLength(10)
param prefix string = 'outbox'

@description('The Cosmos DB database.')
param databaseName string = 'shop'

@description('The container holding the aggregates and their outbox documents.')
param containerName string = 'orders'

@description('Partition key path of that container; outbox documents share the aggregate\'s partition.')
param partitionKeyPath string = '/pk'

@description('Lease container of the Functions Cosmos DB trigger.')
param triggerLeaseContainerName string = 'leases'

@description('Lease container of the standalone processor (`outbox relay cosmos`), if you run one.')
param relayLeaseContainerName string = 'relay-leases'

@description('Function plan: EP1 (Elastic Premium, Linux) by default; Y1 for the Linux Consumption plan.')
@allowed([
  'EP1'
  'EP2'
  'EP3'
  'Y1'
])
param planSku string = 'EP1'

@description('The EventBridge bus events are published to.')
param eventBusName string

@description('URL of the SQS queue that receives quarantined documents.')
param quarantineQueueUrl string

@description('AWS region of the bus and the queue.')
param awsRegion string

@description('AWS access key id of an IAM user allowed events:PutEvents on the bus and sqs:SendMessage on the queue. Prefer a Key Vault reference in production.')
@secure()
param awsAccessKeyId string

@description('Its secret access key.')
@secure()
param awsSecretAccessKey string

var suffix = uniqueString(resourceGroup().id)
// Cosmos DB Built-in Data Contributor (data plane: read and write documents, read the change feed).
var dataContributorRole = '00000000-0000-0000-0000-000000000002'

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-11-15' = {
  name: '${prefix}-cosmos-${suffix}'
  location: location
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    consistencyPolicy: {
      defaultConsistencyLevel: 'Session'
    }
    locations: [
      {
        locationName: location
        failoverPriority: 0
        isZoneRedundant: false
      }
    ]
    capabilities: [
      {
        name: 'EnableServerless'
      }
    ]
    minimalTlsVersion: 'Tls12'
    // The function reads with its managed identity; keys stay enabled for the
    // standalone relay (COSMOS_KEY) and the writer. Set to true if neither uses keys.
    disableLocalAuth: false
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-11-15' = {
  parent: cosmos
  name: databaseName
  properties: {
    resource: {
      id: databaseName
    }
  }
}

resource orders 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: database
  name: containerName
  properties: {
    resource: {
      id: containerName
      partitionKey: {
        paths: [
          partitionKeyPath
        ]
        kind: 'Hash'
        version: 2
      }
      // TTL on, no default expiry: only documents with a `ttl` (the outbox documents) expire.
      defaultTtl: -1
    }
  }
}

resource triggerLeases 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: database
  name: triggerLeaseContainerName
  properties: {
    resource: {
      id: triggerLeaseContainerName
      partitionKey: {
        paths: [
          '/id'
        ]
        kind: 'Hash'
        version: 2
      }
    }
  }
}

resource relayLeases 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-11-15' = {
  parent: database
  name: relayLeaseContainerName
  properties: {
    resource: {
      id: relayLeaseContainerName
      partitionKey: {
        paths: [
          '/id'
        ]
        kind: 'Hash'
        version: 2
      }
    }
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: take('${prefix}st${suffix}', 24)
  location: location
  sku: {
    name: 'Standard_LRS'
  }
  kind: 'StorageV2'
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    supportsHttpsTrafficOnly: true
  }
}

var storageConnection = 'DefaultEndpointsProtocol=https;AccountName=${storage.name};EndpointSuffix=${environment().suffixes.storage};AccountKey=${storage.listKeys().keys[0].value}'

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${prefix}-plan-${suffix}'
  location: location
  kind: planSku == 'Y1' ? 'functionapp' : 'elastic'
  sku: {
    name: planSku
    tier: planSku == 'Y1' ? 'Dynamic' : 'ElasticPremium'
  }
  properties: {
    reserved: true // Linux
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: '${prefix}-relay-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    reserved: true
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      appSettings: [
        {
          name: 'AzureWebJobsStorage'
          value: storageConnection
        }
        {
          name: 'WEBSITE_CONTENTAZUREFILECONNECTIONSTRING'
          value: storageConnection
        }
        {
          name: 'WEBSITE_CONTENTSHARE'
          value: toLower('${prefix}-relay-${suffix}')
        }
        {
          name: 'FUNCTIONS_EXTENSION_VERSION'
          value: '~4'
        }
        {
          name: 'FUNCTIONS_WORKER_RUNTIME'
          value: 'custom'
        }
        // Identity-based connection of the Cosmos DB trigger (function.json `connection`).
        {
          name: 'OUTBOX_COSMOS_CONNECTION__accountEndpoint'
          value: cosmos.properties.documentEndpoint
        }
        {
          name: 'OUTBOX_COSMOS_DATABASE'
          value: databaseName
        }
        {
          name: 'OUTBOX_COSMOS_CONTAINER'
          value: containerName
        }
        {
          name: 'OUTBOX_COSMOS_TRIGGER_LEASE_CONTAINER'
          value: triggerLeaseContainerName
        }
        {
          name: 'OUTBOX_EVENT_BUS_NAME'
          value: eventBusName
        }
        {
          name: 'OUTBOX_QUARANTINE_QUEUE_URL'
          value: quarantineQueueUrl
        }
        {
          name: 'AWS_REGION'
          value: awsRegion
        }
        {
          name: 'AWS_ACCESS_KEY_ID'
          value: awsAccessKeyId
        }
        {
          name: 'AWS_SECRET_ACCESS_KEY'
          value: awsSecretAccessKey
        }
      ]
    }
  }
  dependsOn: [
    orders
    triggerLeases
  ]
}

// The trigger reads the change feed and writes its leases with the function's identity.
resource functionDataAccess 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-11-15' = {
  parent: cosmos
  name: guid(cosmos.id, functionApp.id, dataContributorRole)
  properties: {
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${dataContributorRole}'
    principalId: functionApp.identity.principalId
    scope: cosmos.id
  }
}

@description('The Cosmos DB endpoint (COSMOS_ENDPOINT of the writer and of `outbox relay cosmos`).')
output cosmosEndpoint string = cosmos.properties.documentEndpoint

@description('The function app to deploy the custom handler package to.')
output functionAppName string = functionApp.name

@description('The lease container of the standalone processor.')
output relayLeaseContainer string = relayLeases.name
