// A Key Vault created by this template (createVaults = true). RBAC
// authorization only (no access policies), soft delete with purge
// protection, and audit logs to Log Analytics.

@description('Region of the vault.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Vault name (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param vaultName string

@description('Days a deleted vault or secret can be recovered (7-90).')
@minValue(7)
@maxValue(90)
param softDeleteRetentionInDays int = 90

@description('Premium keeps keys in HSMs; secrets rotation works with either.')
@allowed([
  'standard'
  'premium'
])
param skuName string = 'standard'

@description('Allow or Deny requests from networks not listed below. Deny needs the function app on a VNet (subnet listed in allowedSubnetIds).')
@allowed([
  'Allow'
  'Deny'
])
param networkDefaultAction string = 'Deny'

@description('Subnets (with the Microsoft.KeyVault service endpoint) allowed through the firewall.')
param allowedSubnetIds array = []

@description('Public IP ranges (CIDR) allowed through the firewall, e.g. operators adding secrets.')
param allowedIpRanges array = []

@description('Log Analytics workspace receiving the vault audit log.')
param workspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: vaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: skuName
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: softDeleteRetentionInDays
    enablePurgeProtection: true
    enabledForDeployment: false
    enabledForDiskEncryption: false
    enabledForTemplateDeployment: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: networkDefaultAction
      ipRules: [for range in allowedIpRanges: {
        value: range
      }]
      virtualNetworkRules: [for subnetId in allowedSubnetIds: {
        id: subnetId
        ignoreMissingVnetServiceEndpoint: false
      }]
    }
  }
}

resource audit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'audit'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

output id string = vault.id
output name string = vault.name
