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

@description('App role HTTP callers must hold (ROTATION_REQUIRED_ROLE). Non-empty turns on App Service Authentication with Microsoft Entra ID; empty leaves it off (function keys only).')
param requiredRole string = ''

@description('With requiredRole: client (application) id of the Entra app registration that represents the HTTP API and declares the app role.')
param authClientId string = ''

@description('With requiredRole: token audiences accepted; empty means api://<authClientId> (the client id itself is always accepted).')
param authAllowedAudiences array = []

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

// App Service Authentication ("Easy Auth"), only when an app role is
// required. The platform then validates the caller's Entra token before the
// request reaches the host, strips any x-ms-client-principal* header the
// client sent, injects its own, and sets the read-only WEBSITE_AUTH_ENABLED
// that the app checks before it trusts those headers (functions/http_api.py).
// The app role itself is declared in the app registration (authClientId),
// not here; the role check is in the app (the "roles" claim), because Easy
// Auth's authorization policy has no app-role condition.
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(requiredRole)) {
  // checkov:skip=CKV_AZURE_13: checkov reads the classic authsettings shape (properties.enabled); this is authsettingsV2, where Authentication is on through properties.platform.enabled = true (asserted by tests/infra/test_bicep.py).
  // checkov:skip=CKV_AZURE_63: HTTP logging is a property of the 'web' config (siteConfig), which checkov applies to every sites/config resource; this one holds only authsettingsV2. Telemetry goes to Application Insights.
  // checkov:skip=CKV_AZURE_65: Detailed error messages are a property of the 'web' config (siteConfig), not of authsettingsV2, the only thing this sites/config resource sets; checkov applies the check to any sites/config.
  // checkov:skip=CKV_AZURE_66: Failed request tracing is a property of the 'web' config (siteConfig), not of authsettingsV2, the only thing this sites/config resource sets; checkov applies the check to any sites/config.
  // checkov:skip=CKV_AZURE_80: The .NET Framework version is a 'web' config property and the app is Python on Flex Consumption; this sites/config resource holds only authsettingsV2.
  // checkov:skip=CKV_AZURE_88: Azure Files content storage is a 'web' config concern; Flex Consumption deploys from a blob container (functionAppConfig.deployment) and this resource holds only authsettingsV2.
  // checkov:skip=CKV_AZURE_222: Public network access is a property of the site (skipped there with its reason: Event Grid delivery and operators reach the app over its public endpoint); authsettingsV2 has no such property.
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      // An API, not a web site: no sign-in redirect, a plain 401.
      unauthenticatedClientAction: 'Return401'
      // Event Grid's AzureFunction delivery calls the Event Grid extension's
      // webhook with the extension's system key, never with an Entra token;
      // requiring authentication there would stop every Key Vault event. The
      // HTTP API (/api/...) stays covered.
      excludedPaths: [
        '/runtime/webhooks/eventgrid'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: authClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${subscription().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: empty(authAllowedAudiences) ? [
            'api://${authClientId}'
          ] : authAllowedAudiences
        }
      }
    }
    login: {
      tokenStore: {
        enabled: false
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
output authenticationEnabled bool = !empty(requiredRole)
