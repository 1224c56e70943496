// Flex Consumption plan + Python function app (3.11, 3.12 or 3.13) with a system-assigned
// identity. The host talks to its storage account with that identity
// (AzureWebJobsStorage__credential = managedidentity, no connection string)
// and the deployment package container is reached the same way.

@description('Region of the plan and the app.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Function app name (globally unique host name).')
param functionAppName string

@description('Flex Consumption plan name.')
param planName string

@description('Blob endpoint of the app storage account, ending with a slash.')
param storageBlobEndpoint string

@description('Blob container holding the deployment package.')
param deploymentContainerName string

@description('Application settings, name to value. Set as they are: nothing here is a secret.')
param appSettings object

@description('Resource id of a subnet delegated to Microsoft.App/environments, or empty for no VNet integration.')
param virtualNetworkSubnetId string = ''

@description('Upper bound of Flex Consumption instances.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Spread instances across availability zones (region must support it; the platform then keeps at least two always-ready instances, which are billed).')
param zoneRedundant bool = false

@description('Memory of one instance in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Python version the app runs on. Flex Consumption offers 3.10-3.13 (3.14 in preview); the app supports 3.11, 3.12 and 3.13, and requirements.txt is locked for each (README, "Python versions").')
@allowed([
  '3.11'
  '3.12'
  '3.13'
])
param pythonVersion string = '3.11'

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy is the zoneRedundant parameter (off by default: not every Flex Consumption region supports it and it adds billed always-ready instances); checkov only sees the default.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid delivers Key Vault events to the AzureFunction endpoint over the public endpoint and operators call the HTTP API; the HTTP functions require a function key or Entra token (ROTATION_REQUIRED_ROLE). Private ingress would need private endpoints and a private Event Grid delivery path.
  // checkov:skip=CKV_AZURE_17: Callers authenticate with function keys or Entra tokens; Event Grid's AzureFunction delivery presents no client certificate, so requiring one would block the trigger.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero on demand; there is no instance minimum to set for failover (always-ready instances are billed and this workload is event-driven and retried by Event Grid and the sweep timer).
  // checkov:skip=CKV_AZURE_213: App Service health check (healthCheckPath) does not apply to Flex Consumption, which manages instance health itself.
  name: functionAppName
  location: location
  // azd finds the host of service "rotation" by this tag.
  tags: union(tags, {
    'azd-service-name': 'rotation'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// No publishing with user names and passwords: azd deploys with an Entra token.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output id string = functionApp.id
output name string = functionApp.name
output principalId string = functionApp.identity.principalId
output defaultHostName string = functionApp.properties.defaultHostName
