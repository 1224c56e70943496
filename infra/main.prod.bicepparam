// Production environment, for deployments without azd:
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.prod.bicepparam
// then stage two (see docs/deploy.md). With azd, set the same values with
// `azd env set` in the prod environment (infra/main.parameters.json maps them).
using './main.bicep'

param environmentName = 'prod'

// The vaults already exist and hold the secrets; this template only adds the
// function's role assignment and the Event Grid system topic to each. They
// must use the RBAC permission model (enableRbacAuthorization = true).
param vaultNames = [
  'kv-payments-prod-01'
  'kv-identity-prod-01'
]
param createVaults = false
param vaultResourceGroupName = 'rg-keyvaults-prod'

// Reach PostgreSQL and Redis on their private endpoints through a subnet
// delegated to Microsoft.App/environments (an existing one: set its id).
param enableVnetIntegration = true
param existingSubnetId = ''
param vnetAddressPrefix = '10.40.0.0/16'
param functionSubnetPrefix = '10.40.1.0/24'
param privateEndpointSubnetPrefix = '10.40.2.0/24'

param storageSkuName = 'Standard_ZRS'
// Turn on in a region with zone-redundant Flex Consumption; it keeps billed
// always-ready instances.
param zoneRedundant = false
param logRetentionInDays = 90
param maximumInstanceCount = 40
param instanceMemoryMB = 2048
// 3.11, 3.12 or 3.13 (README, "Python versions").
param pythonVersion = '3.11'

param rotationLeadDays = 30
param rotationGracePeriodHours = 24
param rotationRetireWhen = 'acknowledged_or_grace'
// JSON text keyed by secret name; see the README for the consumer format.
param rotationConsumers = ''
param eventGridSchema = 'eventgrid'
// App role HTTP callers must hold; must match an app role of the API's Entra
// app registration (authClientId), and turns on App Service Authentication.
// Empty disables the check (function keys only). See docs/deploy.md.
param requiredRole = 'Rotation.Operator'
param authClientId = '00000000-0000-0000-0000-000000000000' // replace: the API's app registration
// Secrets matched by rotation.json tagManaged patterns need vault-wide
// rights; off means only the secrets the file lists can be rotated.
param grantTagManagedVaultWide = false
param sweepSchedule = '0 0 */6 * * *'

// Who hears about failed rotations, dead-lettered events, overdue secrets and
// manual-only keys about to expire (README "Operating it").
param alertEmailAddresses = [
  'secops-oncall@example.com'
]
param manualExpiryWarningDays = 30
param sweepMaxAgeHours = 26
