// Development environment, for deployments without azd:
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.dev.bicepparam
// then stage two (see docs/deploy.md). With azd, the same values come from
// `azd env set` (infra/main.parameters.json maps them).
using './main.bicep'

param environmentName = 'dev'

// Replace with your vault names. Dev creates its own vaults.
param vaultNames = [
  'kv-rotation-dev-01'
]
param createVaults = true
param vaultSoftDeleteRetentionInDays = 7

param enableVnetIntegration = false
param storageSkuName = 'Standard_LRS'
param zoneRedundant = false
param logRetentionInDays = 30
param maximumInstanceCount = 10
param instanceMemoryMB = 2048
// 3.11, 3.12 or 3.13 (README, "Python versions").
param pythonVersion = '3.11'

param rotationLeadDays = 30
param rotationGracePeriodHours = 1
param rotationRetireWhen = 'acknowledged_or_grace'
param rotationConsumers = ''
param eventGridSchema = 'eventgrid'
// Empty: function keys only, principal headers ignored. Set both to turn on
// App Service Authentication (see docs/deploy.md).
param requiredRole = ''
param authClientId = ''
// Secrets matched by rotation.json tagManaged patterns need vault-wide
// rights; off means only the secrets the file lists can be rotated.
param grantTagManagedVaultWide = false
param sweepSchedule = '0 0 */6 * * *'
