// The subscription of one vault's system topic: near-expiry and expired
// secret events only, delivered to the rotate_on_event function, retried,
// and dead-lettered to blob storage with the system topic's own identity.

@description('Name of the vault\'s Event Grid system topic (created by stage one).')
param systemTopicName string

@description('Resource id of the function: .../Microsoft.Web/sites/<app>/functions/rotate_on_event.')
param functionResourceId string

@description('Resource id of the storage account for dead letters.')
param deadLetterStorageAccountId string

@description('Blob container for dead letters.')
param deadLetterContainerName string

@description('Delivery attempts before an event is dead-lettered.')
param maxDeliveryAttempts int

@description('Minutes Event Grid keeps retrying an event.')
param eventTimeToLiveInMinutes int

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
}

resource eventSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: systemTopic
  name: 'rotate-on-event'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: functionResourceId
        // One event per invocation: each rotation takes its own lease and
        // fails or succeeds on its own.
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.KeyVault.SecretNearExpiry'
        'Microsoft.KeyVault.SecretExpired'
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output id string = eventSubscription.id
