// Secret rotation for Azure Key Vault: everything `azd provision` creates.
//
// Stage one (this file): storage, monitoring, the Flex Consumption function
// app with its managed identity and settings (and App Service Authentication
// when an app role is required), the SecretRotated topic, the vaults
// (created or existing), one Event Grid system topic per vault and every role
// assignment, each scoped to the single resource it is for: Key Vault rights
// per secret, derived from the operator file rotation.json; storage rights
// per container.
//
// Stage two (eventgrid.bicep, run by the azd postdeploy hook): the event
// subscriptions from each system topic to the rotate_on_event function. An
// AzureFunction destination can only be created once the function exists in
// the app, i.e. after `azd deploy`; see docs/deploy.md.

targetScope = 'resourceGroup'

// ---------------------------------------------------------------- general

@minLength(1)
@maxLength(64)
@description('azd environment name (dev, prod, ...). Part of every generated name and the azd-env-name tag.')
param environmentName string

@description('Region of everything but the Event Grid system topics, which live in their vault\'s region.')
param location string = resourceGroup().location

// One custom role per kind of rotated Azure resource, assigned on each resource only.
module rotatorRoles 'modules/rotator-roles.bicep' = {
  name: 'rotator-roles'
  scope: resourceGroup(empty(rotatedResourcesResourceGroupName) ? resourceGroup().name : rotatedResourcesResourceGroupName)
  params: {
    functionPrincipalId: functionApp.outputs.principalId
    cognitiveAccountNames: rotatedCognitiveAccountNames
    redisCacheNames: rotatedRedisCacheNames
    managedRedisClusterNames: rotatedManagedRedisClusterNames
  }
}

// ---------------------------------------------------------------- vaults

@minLength(1)
@description('Key Vaults the function may rotate secrets in (names). This is also ROTATION_ALLOWED_VAULTS.')
param vaultNames array

@description('true: create the vaults here. false: they exist already (in vaultResourceGroupName).')
param createVaults bool = false

@description('Resource group holding the vaults (same subscription); empty means this one. Their system topics and role assignments go there too.')
param vaultResourceGroupName string = ''

@description('Vault used when a request names none (ROTATION_DEFAULT_VAULT). Empty: the only vault when there is one, else none.')
param defaultVaultName string = ''

@description('Created vaults only: public IP ranges (CIDR) admitted through the vault firewall when VNet integration is on, e.g. operators.')
param vaultAllowedIpRanges array = []

@description('Created vaults only: days a deleted vault or secret stays recoverable.')
@minValue(7)
@maxValue(90)
param vaultSoftDeleteRetentionInDays int = 90

// ---------------------------------------------------------------- network

@description('Route the function app\'s outbound traffic through a VNet (to reach PostgreSQL/Redis on private endpoints).')
param enableVnetIntegration bool = false

@description('With VNet integration: an existing subnet delegated to Microsoft.App/environments. Empty: a new VNet is created.')
param existingSubnetId string = ''

@description('Address space of the VNet created when existingSubnetId is empty.')
param vnetAddressPrefix string = '10.40.0.0/16'

@description('Function app subnet of the created VNet.')
param functionSubnetPrefix string = '10.40.1.0/24'

@description('Private endpoint subnet of the created VNet (for PostgreSQL/Redis private endpoints).')
param privateEndpointSubnetPrefix string = '10.40.2.0/24'

// ---------------------------------------------------------------- hosting

@description('Replication of the app storage account.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
])
param storageSkuName string = 'Standard_LRS'

@description('Days Log Analytics keeps logs.')
@minValue(30)
@maxValue(730)
param logRetentionInDays int = 30

@description('Upper bound of Flex Consumption instances.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Zone-redundant Flex Consumption plan (supported regions only; keeps billed always-ready instances). Use with Standard_ZRS storage.')
param zoneRedundant bool = false

@description('Memory of one Flex Consumption instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Python version of the function app: 3.11, 3.12 or 3.13 (README, "Python versions"; the unit suite runs on each with `make unit-pythons`).')
@allowed([
  '3.11'
  '3.12'
  '3.13'
])
param pythonVersion string = '3.11'

// ---------------------------------------------------------------- rotation behaviour (app settings)

@description('ROTATION_LEAD_DAYS: rotate this many days before expiry. At least 30: Key Vault raises SecretNearExpiry 30 days before expiry whatever this says, and a shorter lead would loop.')
@minValue(30)
param rotationLeadDays int = 30

@description('ROTATION_GRACE_PERIOD_HOURS: how long the previous version stays enabled.')
@minValue(0)
param rotationGracePeriodHours int = 24

@description('ROTATION_RETIRE_WHEN: retire the old version when consumers acknowledged or the grace period ended, or only after the grace period.')
@allowed([
  'acknowledged_or_grace'
  'grace'
])
param rotationRetireWhen string = 'acknowledged_or_grace'

@description('ROTATION_CONSUMERS: per-secret consumers to notify and ping, as JSON text (an object keyed by secret name). Empty means none.')
param rotationConsumers string = ''

@description('ROTATION_PING_TIMEOUT_SECONDS.')
@minValue(1)
param rotationPingTimeoutSeconds int = 5

@description('ROTATION_PING_ATTEMPTS.')
@minValue(1)
param rotationPingAttempts int = 3

@description('ROTATION_VAULT_MAX_RETRIES.')
@minValue(0)
param vaultMaxRetries int = 4

@description('ROTATION_LEASE_WAIT_SECONDS: how long a second rotation of the same secret waits for the lease.')
@minValue(0)
param rotationLeaseWaitSeconds int = 30

@description('ROTATION_JWT_MAX_TOKEN_LIFETIME_SECONDS: longest lifetime of tokens signed with a rotated JWT key.')
@minValue(1)
param jwtMaxTokenLifetimeSeconds int = 86400

@description('ROTATION_EVENTGRID_SCHEMA: schema of the SecretRotated events (and of the custom topic).')
@allowed([
  'eventgrid'
  'cloudevents'
])
param eventGridSchema string = 'eventgrid'

@description('ROTATION_REQUIRED_ROLE: app role callers of the HTTP API must hold. Non-empty also turns on App Service Authentication (Entra ID, authClientId). Empty: no role check, function keys only.')
param requiredRole string = ''

@description('With requiredRole: client id of the Entra app registration of the HTTP API (it declares the app role). Required when requiredRole is set.')
param authClientId string = ''

@description('With requiredRole: accepted token audiences; empty means api://<authClientId>.')
param authAllowedAudiences array = []

// ---------------------------------------------------------------- least privilege

@description('Grant the app the secret rotator role on whole vaults for secrets that rotation.json leaves to tags (tagManaged patterns), whose names are unknown at deployment time. Off: only the secrets the file lists are writable, and tag-managed secrets fail with 403.')
param grantTagManagedVaultWide bool = false

@description('Escape hatch: Storage Blob Data Owner on the whole app storage account instead of per container (see modules/app-roles.bicep). Off by default.')
param hostStorageAccountWide bool = false

@description('ROTATION_SWEEP_CONCURRENCY: secrets the timer sweep handles at once.')
@minValue(1)
param sweepConcurrency int = 8

@description('ROTATION_SWEEP_SCHEDULE: NCRONTAB schedule of the rotation_sweep timer (six fields, UTC).')
param sweepSchedule string = '0 0 */6 * * *'

@description('Azure OpenAI / AI Foundry accounts whose keys the app rotates (key-slot rotator; rotation.json targets).')
param rotatedCognitiveAccountNames array = []

@description('Azure Cache for Redis caches whose access keys the app rotates (key-slot rotator).')
param rotatedRedisCacheNames array = []

@description('Azure Managed Redis clusters whose default database access keys the app rotates (key-slot rotator).')
param rotatedManagedRedisClusterNames array = []

@description('Resource group of the resources above; empty: this one.')
param rotatedResourcesResourceGroupName string = ''

// ---------------------------------------------------------------- alerts (modules/alerts.bicep, README "Operating it")

@description('E-mail addresses the action group notifies of every rotation alert.')
param alertEmailAddresses array = []

@description('Webhook the action group calls for every rotation alert (common alert schema). Empty: none.')
@secure()
param alertWebhookUrl string = ''

@description('Alert this many days before a manual-only secret expires (it must be rotated at its provider).')
@minValue(1)
@maxValue(365)
param manualExpiryWarningDays int = 30

@description('Alert when no sweep completed for this many hours.')
@minValue(1)
@maxValue(47)
param sweepMaxAgeHours int = 26

// ---------------------------------------------------------------- names

var resourceToken = toLower(uniqueString(subscription().id, resourceGroup().id, environmentName))
var tags = {
  'azd-env-name': environmentName
  application: 'secret-rotation'
}
var functionAppName = 'func-rotation-${resourceToken}'
var planName = 'plan-rotation-${resourceToken}'
var storageAccountName = 'strot${resourceToken}'
var workspaceName = 'log-rotation-${resourceToken}'
var appInsightsName = 'appi-rotation-${resourceToken}'
var eventTopicName = 'evgt-rotation-${resourceToken}'
var actionGroupName = 'ag-rotation-${resourceToken}'
var vnetName = 'vnet-rotation-${resourceToken}'
var deploymentContainerName = 'app-package-${resourceToken}'
var leaseContainerName = 'rotation-locks'
var deadLetterContainerName = 'eventgrid-deadletter'
var vaultList = [for name in vaultNames: toLower(name)]
var systemTopicPrefix = 'evgst-'
var defaultVault = empty(defaultVaultName) ? (length(vaultNames) == 1 ? toLower(vaultNames[0]) : '') : toLower(defaultVaultName)
var createNetwork = enableVnetIntegration && empty(existingSubnetId)
var vaultRg = empty(vaultResourceGroupName) ? resourceGroup().name : vaultResourceGroupName
// Parsed here so that malformed JSON fails the deployment, not the app at run time.
var consumersConfig = json(empty(rotationConsumers) ? '{}' : rotationConsumers)
var consumersJson = string(consumersConfig)
// Consumers whose refresh pings are HMAC-signed name a Key Vault secret the
// app must read (hmacSecret); see shared/consumers.py.
var consumerCatalog = contains(consumersConfig, 'consumers') ? consumersConfig.consumers : {}

// The operator file: which secrets the app rotates, which admin secrets it
// reads. Loaded when the template is compiled (path relative to this file,
// i.e. the repository root) and embedded in it, so the rights deployed are
// always those of the file deployed with the code.
var operatorConfig = loadJsonContent('../rotation.json')
var adminSecretNames = contains(operatorConfig, 'adminSecrets') ? operatorConfig.adminSecrets : []
var tagManagedPatterns = contains(operatorConfig, 'tagManaged') ? operatorConfig.tagManaged : []

// ---------------------------------------------------------------- shared resources

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    workspaceName: workspaceName
    appInsightsName: appInsightsName
    retentionInDays: logRetentionInDays
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: tags
    storageAccountName: storageAccountName
    skuName: storageSkuName
    deploymentContainerName: deploymentContainerName
    leaseContainerName: leaseContainerName
    deadLetterContainerName: deadLetterContainerName
  }
}

module network 'modules/network.bicep' = if (createNetwork) {
  name: 'network'
  params: {
    location: location
    tags: tags
    vnetName: vnetName
    addressPrefix: vnetAddressPrefix
    functionSubnetPrefix: functionSubnetPrefix
    privateEndpointSubnetPrefix: privateEndpointSubnetPrefix
  }
}

var functionSubnetId = enableVnetIntegration ? (createNetwork ? network.outputs.functionSubnetId : existingSubnetId) : ''

module eventTopic 'modules/event-topic.bicep' = {
  name: 'event-topic'
  params: {
    location: location
    tags: tags
    topicName: eventTopicName
    schema: eventGridSchema
  }
}

// ---------------------------------------------------------------- function app

// Every setting the Azure deployment sets. infra/app-settings.json is the
// authoritative list; tests/infra/test_bicep.py keeps the two identical.
// No keys, passwords or connection strings: every client uses the identity.
var appSettings = {
  AzureWebJobsStorage__accountName: storageAccountName
  AzureWebJobsStorage__blobServiceUri: 'https://${storageAccountName}.blob.${environment().suffixes.storage}'
  AzureWebJobsStorage__credential: 'managedidentity'
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
  ROTATION_ALLOWED_VAULTS: join(vaultList, ',')
  ROTATION_DEFAULT_VAULT: defaultVault
  ROTATION_VAULT_CREDENTIAL: 'default'
  ROTATION_VAULT_MAX_RETRIES: string(vaultMaxRetries)
  ROTATION_LEASE_CONTAINER: leaseContainerName
  ROTATION_LEASE_WAIT_SECONDS: string(rotationLeaseWaitSeconds)
  ROTATION_LEAD_DAYS: string(rotationLeadDays)
  ROTATION_JWT_MAX_TOKEN_LIFETIME_SECONDS: string(jwtMaxTokenLifetimeSeconds)
  ROTATION_GRACE_PERIOD_HOURS: string(rotationGracePeriodHours)
  ROTATION_RETIRE_WHEN: rotationRetireWhen
  ROTATION_CONSUMERS: consumersJson
  ROTATION_PING_TIMEOUT_SECONDS: string(rotationPingTimeoutSeconds)
  ROTATION_PING_ATTEMPTS: string(rotationPingAttempts)
  ROTATION_EVENTGRID_TOPIC_ENDPOINT: eventTopic.outputs.endpoint
  ROTATION_EVENTGRID_SCHEMA: eventGridSchema
  ROTATION_REQUIRED_ROLE: requiredRole
  ROTATION_SWEEP_CONCURRENCY: string(sweepConcurrency)
  ROTATION_SWEEP_SCHEDULE: sweepSchedule
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  params: {
    location: location
    tags: tags
    functionAppName: functionAppName
    planName: planName
    storageBlobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    appSettings: appSettings
    virtualNetworkSubnetId: functionSubnetId
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    zoneRedundant: zoneRedundant
    pythonVersion: pythonVersion
    requiredRole: requiredRole
    authClientId: authClientId
    authAllowedAudiences: authAllowedAudiences
  }
}

module appRoles 'modules/app-roles.bicep' = {
  name: 'app-roles'
  params: {
    functionPrincipalId: functionApp.outputs.principalId
    storageAccountName: storage.outputs.name
    hostContainerNames: storage.outputs.hostContainerNames
    deploymentContainerName: deploymentContainerName
    leaseContainerName: leaseContainerName
    hostStorageAccountWide: hostStorageAccountWide
    eventTopicName: eventTopic.outputs.name
    appInsightsName: monitoring.outputs.appInsightsName
  }
}

// ---------------------------------------------------------------- vaults

// With createVaults = false the loop is empty and the vaults must exist.
module keyVaults 'modules/keyvault.bicep' = [for name in (createVaults ? vaultList : []): {
  name: 'keyvault-${name}'
  scope: resourceGroup(vaultRg)
  params: {
    location: location
    tags: tags
    vaultName: name
    softDeleteRetentionInDays: vaultSoftDeleteRetentionInDays
    // Without VNet integration Flex Consumption has no fixed outbound
    // address to admit, so the firewall stays open (RBAC still applies).
    networkDefaultAction: enableVnetIntegration ? 'Deny' : 'Allow'
    allowedSubnetIds: enableVnetIntegration ? [
      functionSubnetId
    ] : []
    allowedIpRanges: vaultAllowedIpRanges
    workspaceId: monitoring.outputs.workspaceId
  }
}]

// The two custom roles (secret metadata reader, secret rotator), once in the
// vaults' resource group.
module vaultRoles 'modules/vault-roles.bicep' = {
  name: 'vault-roles'
  scope: resourceGroup(vaultRg)
  params: {
    nameToken: resourceToken
  }
}

module vaultAccess 'modules/vault-access.bicep' = [for name in vaultList: {
  name: 'vault-access-${name}'
  scope: resourceGroup(vaultRg)
  params: {
    vaultName: name
    systemTopicName: '${systemTopicPrefix}${name}'
    functionPrincipalId: functionApp.outputs.principalId
    tags: tags
    metadataReaderRoleGuid: vaultRoles.outputs.metadataReaderRoleGuid
    secretWriterRoleGuid: vaultRoles.outputs.secretWriterRoleGuid
    secretPolicies: operatorConfig.secrets
    adminSecretNames: adminSecretNames
    consumerCatalog: consumerCatalog
    grantTagManagedVaultWide: grantTagManagedVaultWide
    tagManagedPatterns: tagManagedPatterns
  }
  dependsOn: [
    keyVaults
  ]
}]

module deadLetterAccess 'modules/deadletter-access.bicep' = {
  name: 'deadletter-access'
  params: {
    storageAccountName: storage.outputs.name
    deadLetterContainerName: deadLetterContainerName
    principalIds: [for i in range(0, length(vaultList)): vaultAccess[i].outputs.systemTopicPrincipalId]
  }
}

// ---------------------------------------------------------------- alerts and workbook

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    tags: tags
    appInsightsId: monitoring.outputs.appInsightsId
    actionGroupName: actionGroupName
    alertEmailAddresses: alertEmailAddresses
    alertWebhookUrl: alertWebhookUrl
    systemTopicIds: [for name in vaultList: resourceId(vaultRg, 'Microsoft.EventGrid/systemTopics', '${systemTopicPrefix}${name}')]
    manualExpiryWarningDays: manualExpiryWarningDays
    sweepMaxAgeHours: sweepMaxAgeHours
  }
  dependsOn: [
    vaultAccess
  ]
}

// ---------------------------------------------------------------- stage two input

// Parameters of infra/eventgrid.bicep, written to a file by the postdeploy
// hook. Names only: the hook needs no lookups and no credentials of its own.
var subscriptionTargets = [for name in vaultList: {
  name: name
  resourceGroup: vaultRg
  systemTopicName: '${systemTopicPrefix}${name}'
}]

var eventGridParameters = {
  contentVersion: '1.0.0.0'
  parameters: {
    functionAppName: {
      value: functionAppName
    }
    vaults: {
      value: subscriptionTargets
    }
    storageAccountName: {
      value: storageAccountName
    }
    deadLetterContainerName: {
      value: deadLetterContainerName
    }
  }
}

// ---------------------------------------------------------------- outputs (azd stores them in the environment)

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = subscription().tenantId
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_HOSTNAME string = functionApp.outputs.defaultHostName
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.appInsightsName
output ROTATION_ALLOWED_VAULTS string = join(vaultList, ',')
output ROTATION_VAULT_RESOURCE_GROUP string = vaultRg
output ROTATION_EVENTGRID_TOPIC_ENDPOINT string = eventTopic.outputs.endpoint
output ROTATION_EVENTGRID_PARAMETERS string = string(eventGridParameters)
