// Custom Event Grid topic the app publishes SecretRotated events to.
// Access keys are disabled: the app publishes with its managed identity,
// which holds EventGrid Data Sender on this topic only.

@description('Region of the topic.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Topic name.')
param topicName string

@description('Schema the app publishes in (ROTATION_EVENTGRID_SCHEMA).')
@allowed([
  'eventgrid'
  'cloudevents'
])
param schema string = 'eventgrid'

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  // checkov:skip=CKV_AZURE_193: The app publishes from Flex Consumption, which has no fixed egress address; closing the public endpoint needs a private endpoint and private DNS this template does not provision. Keys are disabled, so only Entra identities holding EventGrid Data Sender on this topic can publish.
  name: topicName
  location: location
  tags: tags
  // Identity for Event Grid's own outbound calls (e.g. identity-based delivery of subscriptions added by consumers).
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: schema == 'cloudevents' ? 'CloudEventSchemaV1_0' : 'EventGridSchema'
    disableLocalAuth: true
    minimumTlsVersionAllowed: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

output id string = topic.id
output name string = topic.name
output endpoint string = topic.properties.endpoint
