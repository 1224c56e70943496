#!/usr/bin/env sh
# azd postdeploy hook: stage two of the deployment.
#
# Creates the Event Grid subscriptions (infra/eventgrid.bicep) from each
# vault's system topic to the rotate_on_event function. This cannot be part
# of `azd provision`: an AzureFunction destination names the function
# resource, which exists only after `azd deploy` published the code and the
# host indexed it. azd runs this hook after every successful deploy, so the
# order is guaranteed; the subscriptions are idempotent (re-running updates
# them in place).
#
# Inputs (azd exports its environment to hooks; main.bicep outputs are in it):
#   AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZURE_ENV_NAME,
#   AZURE_FUNCTION_APP_NAME, ROTATION_EVENTGRID_PARAMETERS
# Needs the Azure CLI signed in (`az login`) to the same tenant as azd.
set -eu

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
infra=$(dirname -- "$here")
function_name=rotate_on_event
wait_seconds=${ROTATION_INDEX_WAIT_SECONDS:-600}
poll_seconds=${ROTATION_INDEX_POLL_SECONDS:-15}

for name in AZURE_SUBSCRIPTION_ID AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME ROTATION_EVENTGRID_PARAMETERS; do
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then
    echo "postdeploy: $name is not set; run 'azd provision' first." >&2
    exit 1
  fi
done

if ! command -v az >/dev/null 2>&1; then
  echo "postdeploy: the Azure CLI (az) is required for stage two." >&2
  exit 1
fi
if ! az account show --subscription "$AZURE_SUBSCRIPTION_ID" --only-show-errors >/dev/null 2>&1; then
  echo "postdeploy: az is not signed in to subscription $AZURE_SUBSCRIPTION_ID; run 'az login' and 'azd hooks run postdeploy'." >&2
  exit 1
fi

# Wait until the host has indexed the Event Grid trigger: creating the
# subscription earlier fails because the function resource does not exist.
echo "postdeploy: waiting for $AZURE_FUNCTION_APP_NAME/$function_name (up to ${wait_seconds}s)"
waited=0
until az functionapp function show \
    --subscription "$AZURE_SUBSCRIPTION_ID" \
    --resource-group "$AZURE_RESOURCE_GROUP" \
    --name "$AZURE_FUNCTION_APP_NAME" \
    --function-name "$function_name" \
    --query name --output tsv --only-show-errors >/dev/null 2>&1; do
  if [ "$waited" -ge "$wait_seconds" ]; then
    echo "postdeploy: $function_name did not appear in $AZURE_FUNCTION_APP_NAME; check the deployment logs." >&2
    exit 1
  fi
  sleep "$poll_seconds"
  waited=$((waited + poll_seconds))
done

params_file=$(mktemp)
trap 'rm -f "$params_file"' EXIT
printf '%s' "$ROTATION_EVENTGRID_PARAMETERS" > "$params_file"

echo "postdeploy: creating the Event Grid subscriptions (infra/eventgrid.bicep)"
az deployment group create \
  --subscription "$AZURE_SUBSCRIPTION_ID" \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --name "rotation-eventgrid-${AZURE_ENV_NAME:-default}" \
  --template-file "$infra/eventgrid.bicep" \
  --parameters "@$params_file" \
  --only-show-errors \
  --output none
echo "postdeploy: Key Vault events now reach $function_name"
