// Optional VNet for the function app's outbound traffic (reaching PostgreSQL
// and Redis over private endpoints or VNet peering). Flex Consumption needs a
// dedicated subnet delegated to Microsoft.App/environments.

@description('Region of the virtual network.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Virtual network name.')
param vnetName string

@description('Address space of the virtual network.')
param addressPrefix string = '10.40.0.0/16'

@description('Subnet for the function app (at least /27; nothing else may use it).')
param functionSubnetPrefix string = '10.40.1.0/24'

@description('Subnet for private endpoints of PostgreSQL/Redis (optional use).')
param privateEndpointSubnetPrefix string = '10.40.2.0/24'

var functionSubnetName = 'snet-function'
var privateEndpointSubnetName = 'snet-private-endpoints'

resource nsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: 'nsg-${vnetName}'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: functionSubnetName
        properties: {
          addressPrefix: functionSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          // Lets created vaults admit this subnet through their firewall.
          serviceEndpoints: [
            {
              service: 'Microsoft.KeyVault'
            }
          ]
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
          privateEndpointNetworkPolicies: 'Disabled'
          privateLinkServiceNetworkPolicies: 'Enabled'
        }
      }
      {
        name: privateEndpointSubnetName
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          privateEndpointNetworkPolicies: 'Enabled'
          privateLinkServiceNetworkPolicies: 'Enabled'
        }
      }
    ]
  }
}

output vnetId string = vnet.id
output functionSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, functionSubnetName)
output privateEndpointSubnetId string = resourceId('Microsoft.Network/virtualNetworks/subnets', vnet.name, privateEndpointSubnetName)
