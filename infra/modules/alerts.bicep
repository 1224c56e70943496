// Who is told, and when: an action group, the alert rules on the app's
// telemetry (shared/telemetry.py) and the Event Grid dead-letter metric, and
// a workbook showing every secret. What each alert means and what to do:
// README.md, "Operating it".
//
// The log alerts query Application Insights' customMetrics table; their KQL
// lives in infra/alerts/*.kql (loaded here), and tests/unit/test_telemetry.py
// checks that every name those queries use is one the app really exports.

@description('Region of the alert rules and the workbook (the action group is global).')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Resource id of the Application Insights component the app reports to.')
param appInsightsId string

@description('Action group name.')
param actionGroupName string

@description('Short name of the action group (shown in SMS and e-mail), at most 12 characters.')
@maxLength(12)
param actionGroupShortName string = 'rotation'

@description('E-mail addresses told about every alert.')
param alertEmailAddresses array = []

@description('Webhook (e.g. a chat or paging integration) told about every alert, in the common alert schema. Empty: none. Secure because such URLs often carry a token.')
@secure()
param alertWebhookUrl string = ''

@description('Resource ids of the vaults\' Event Grid system topics, whose dead-lettered events raise an alert.')
param systemTopicIds array = []

@description('Warn about a manual-only secret this many days before it expires.')
@minValue(1)
@maxValue(365)
param manualExpiryWarningDays int = 30

@description('Alert when no sweep completed for this many hours (the default schedule runs it every 6 hours).')
@minValue(1)
@maxValue(47)
param sweepMaxAgeHours int = 26

@description('Create the alert rules enabled.')
param alertsEnabled bool = true

var emailReceivers = [for (address, i) in alertEmailAddresses: {
  name: 'email-${i}'
  emailAddress: address
  useCommonAlertSchema: true
}]

var webhookReceivers = empty(alertWebhookUrl) ? [] : [
  {
    name: 'webhook'
    serviceUri: alertWebhookUrl
    useCommonAlertSchema: true
  }
]

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: actionGroupShortName
    enabled: true
    emailReceivers: emailReceivers
    webhookReceivers: webhookReceivers
  }
}

// ---------------------------------------------------------------- log alerts on the app's telemetry

// One entry per rule: the query, how its rows are judged, and the columns
// that split it into one alert per secret.
var secretDimensions = [
  {
    name: 'vault'
    operator: 'Include'
    values: [
      '*'
    ]
  }
  {
    name: 'secret'
    operator: 'Include'
    values: [
      '*'
    ]
  }
]

var logAlerts = [
  {
    key: 'rotation-failed'
    displayName: 'Secret rotation failed for good'
    description: 'A rotation failed and nothing retries it on its own (a permanent error, or an HTTP or sweep request). The secret still serves its previous, valid version. Look up the rotation in Application Insights (dependencies named rotation with this secret), fix the cause named by rotation.error_code, then rotate it with POST /api/secrets/{name}/rotate.'
    severity: 1
    frequency: 'PT5M'
    window: 'PT15M'
    query: loadTextContent('../alerts/rotation-failed.kql')
    measure: ''
    operator: 'GreaterThan'
    threshold: 0
    dimensions: secretDimensions
  }
  {
    key: 'secret-overdue'
    displayName: 'Managed secret overdue or expired'
    description: 'The last sweep found a managed secret due for rotation (inside its near-expiry window, expired, or without expiry) that is still not rotated. Check the rotation-failed alert and the secret\'s status (GET /api/secrets/{name}/rotation), then rotate it by hand if needed.'
    severity: 2
    frequency: 'PT1H'
    window: 'P1D'
    query: loadTextContent('../alerts/secret-overdue.kql')
    measure: ''
    operator: 'GreaterThan'
    threshold: 0
    dimensions: secretDimensions
  }
  {
    key: 'manual-secret-expiring'
    displayName: 'Manual-only secret expires within ${manualExpiryWarningDays} days: rotate it at its provider'
    description: 'A manual-only secret (named in the alert dimensions) expires within ${manualExpiryWarningDays} days. The app never rotates it: issue a new key at its provider (OpenAI, Azure OpenAI, the API gateway, ...), write it to Key Vault as a new version with a new expiry, then revoke the old key at the provider.'
    severity: 2
    frequency: 'PT6H'
    window: 'P1D'
    query: replace(loadTextContent('../alerts/manual-secret-expiring.kql'), '{warningDays}', string(manualExpiryWarningDays))
    measure: ''
    operator: 'GreaterThan'
    threshold: 0
    dimensions: secretDimensions
  }
  {
    key: 'sweep-missing'
    displayName: 'Rotation sweep has not completed in ${sweepMaxAgeHours} hours'
    description: 'No run of the rotation_sweep timer completed in ${sweepMaxAgeHours} hours, so lost events and unfinished rotations are not being caught. Check that the function app is running, the timer is enabled and ROTATION_SWEEP_SCHEDULE is valid, and look for exceptions of rotation_sweep.'
    severity: 2
    frequency: 'PT1H'
    window: 'P2D'
    query: replace(loadTextContent('../alerts/sweep-missing.kql'), '{maxAgeHours}', string(sweepMaxAgeHours))
    measure: 'runs'
    operator: 'LessThan'
    threshold: 1
    dimensions: []
  }
  {
    key: 'consumers-unacknowledged'
    displayName: 'Consumers unacknowledged when the grace period ended'
    description: 'The previous credential of a secret was retired after the grace period although some consumers never acknowledged the new version (rotation.pending_consumers on the log record). Those services may still use the retired credential: make them re-read the secret and check their cache-clear endpoint.'
    severity: 2
    frequency: 'PT15M'
    window: 'PT30M'
    query: loadTextContent('../alerts/consumers-unacknowledged.kql')
    measure: ''
    operator: 'GreaterThan'
    threshold: 0
    dimensions: secretDimensions
  }
]

resource logAlertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in logAlerts: {
  name: 'alert-rotation-${rule.key}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: alertsEnabled
    scopes: [
      appInsightsId
    ]
    evaluationFrequency: rule.frequency
    windowSize: rule.window
    criteria: {
      allOf: [
        {
          query: rule.query
          // Rows per secret, or the value of a measure column (the sweep's run count).
          timeAggregation: empty(rule.measure) ? 'Count' : 'Total'
          metricMeasureColumn: empty(rule.measure) ? null : rule.measure
          operator: rule.operator
          threshold: rule.threshold
          dimensions: rule.dimensions
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
      customProperties: {
        runbook: 'README.md#operating-it'
      }
    }
  }
}]

// ---------------------------------------------------------------- dead-lettered events (platform metric)

// Event Grid writes an event it could not deliver (every retry failed, or
// its time to live ran out) to the dead-letter container and counts it in
// the system topic's DeadLetteredCount metric, which needs nothing from the
// app: an app that is down still gets this alert.
resource deadLetterAlerts 'Microsoft.Insights/metricAlerts@2018-03-01' = [for topicId in systemTopicIds: {
  name: 'alert-rotation-dead-lettered-${last(split(topicId, '/'))}'
  location: 'global'
  tags: tags
  properties: {
    description: 'Event Grid dead-lettered a Key Vault event for the rotation function: every delivery failed. The event is a JSON blob in the eventgrid-deadletter container; the secret was not rotated by it. Find the failed rotations for that secret (rotation-failed alert, dependencies named rotation), fix the cause, then rotate it with POST /api/secrets/{name}/rotate or let the next sweep do it.'
    severity: 1
    enabled: alertsEnabled
    scopes: [
      topicId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    targetResourceType: 'Microsoft.EventGrid/systemTopics'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'dead-lettered'
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: 'DeadLetteredCount'
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: 0
        }
      ]
    }
    autoMitigate: true
    actions: [
      {
        actionGroupId: actionGroup.id
      }
    ]
  }
}]

// ---------------------------------------------------------------- workbook

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(appInsightsId, 'secret-rotation-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Secret rotation'
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: loadTextContent('../workbook/rotation-workbook.json')
  }
}

output actionGroupId string = actionGroup.id
output logAlertNames array = [for (rule, i) in logAlerts: logAlertRules[i].name]
output workbookId string = workbook.id
