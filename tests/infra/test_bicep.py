"""Offline checks of the Bicep infrastructure (no Azure, no Bicep compiler).

The templates are parsed with pycep-parser and the tests assert the things a
reviewer would otherwise have to re-check by eye on every change:

* the app settings the Azure deployment sets are exactly the list in
  ``infra/app-settings.json`` (and that list covers every setting the Python
  code reads);
* the Event Grid subscription takes only the two Key Vault event types and
  targets the ``rotate_on_event`` function;
* every role assignment is scoped to the one resource it is for (never the
  resource group or subscription) and grants only the expected roles;
* the security properties of the Flex Consumption app, the storage account,
  the vaults and the topics;
* the wiring between stage one (main.bicep), the azd postdeploy hook and stage
  two (eventgrid.bicep), including a run of the hook against a fake ``az``.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import textwrap
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MODULES = INFRA / "modules"

# Built-in role definition ids (names as in the Azure portal).
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"

# Role -> the only resource type it may be assigned on.
EXPECTED_ROLE_SCOPES = {
    KEY_VAULT_SECRETS_OFFICER: "Microsoft.KeyVault/vaults",
    STORAGE_BLOB_DATA_OWNER: "Microsoft.Storage/storageAccounts",
    STORAGE_BLOB_DATA_CONTRIBUTOR: "Microsoft.Storage/storageAccounts/blobServices/containers",
    EVENTGRID_DATA_SENDER: "Microsoft.EventGrid/topics",
    MONITORING_METRICS_PUBLISHER: "Microsoft.Insights/components",
}

KEY_VAULT_EVENT_TYPES = ["Microsoft.KeyVault.SecretNearExpiry", "Microsoft.KeyVault.SecretExpired"]
EVENT_FUNCTION_NAME = "rotate_on_event"

# Settings the Azure deployment must not carry: Flex Consumption rejects the
# first three (runtime and package come from functionAppConfig), and a
# connection string would mean a storage key in the app settings.
FORBIDDEN_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "AzureWebJobsStorage",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
}


# ----------------------------------------------------------------- helpers


@cache
def parse(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def body(block: dict[str, Any]) -> dict[str, Any]:
    """The object of a resource/module, looking through loops and conditions."""
    config = block["config"]
    while isinstance(config, dict) and "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    return config


def resources(path: Path, type_: str | None = None) -> dict[str, dict[str, Any]]:
    found = parse(path).get("resources", {})
    return {name: res for name, res in found.items() if type_ is None or res["type"] == type_}


def only_resource(path: Path, type_: str) -> dict[str, Any]:
    found = resources(path, type_)
    assert len(found) == 1, f"{path.name}: expected one {type_}, found {sorted(found)}"
    return body(next(iter(found.values())))


def var_value(path: Path, name: str) -> Any:
    return parse(path)["variables"][name]["value"]


def symbol_of(expression: Any) -> str | None:
    """The resource symbol an expression like ``vault``, ``kv[i]`` or
    ``storage::blobService::container`` designates (nested symbols are joined
    with ``__`` as pycep names them); None for anything else."""
    if isinstance(expression, str):
        return expression
    if not isinstance(expression, dict) or "operator" not in expression:
        return None
    operator = expression["operator"]
    operands = operator["operands"]
    if operator["type"] == "index_accessor":
        return symbol_of(operands["operand_1"])
    if operator["type"] == "nested_resource_accessor":
        inner = symbol_of(operands["operand_2"])
        return f"{operands['operand_1']}__{inner}" if inner else None
    return None


def role_id_of(assignment: dict[str, Any], path: Path) -> str:
    definition = assignment["properties"]["roleDefinitionId"]["function"]
    assert definition["type"] == "subscription_resource_id", (
        f"{path.name}: role must be a built-in (subscriptionResourceId)"
    )
    assert definition["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
    variable = definition["parameters"]["resource_name_1"]
    value = parse(path)["variables"][variable]["value"]
    assert re.fullmatch(r"[0-9a-f-]{36}", value), f"{path.name}: {variable} is not a role id"
    return value


def load_settings_contract() -> dict[str, dict[str, str]]:
    return json.loads((INFRA / "app-settings.json").read_text(encoding="utf-8"))


# ----------------------------------------------------------------- parsing


@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses(path: Path) -> None:
    tree = parse(path)
    assert tree.get("resources") or tree.get("modules"), f"{path.name} declares nothing"


def test_every_module_reference_exists() -> None:
    for path in bicep_files():
        for name, module in parse(path).get("modules", {}).items():
            target = (path.parent / module["detail"]["path"]).resolve()
            assert target.is_file(), f"{path.name}: module {name} -> missing {target}"


# ----------------------------------------------------------------- app settings


def app_settings() -> dict[str, Any]:
    return var_value(INFRA / "main.bicep", "appSettings")


def test_app_settings_match_the_contract_exactly() -> None:
    contract = load_settings_contract()
    set_in_bicep = set(app_settings())
    required = set(contract["required"])
    assert set_in_bicep - required == set(), "set in main.bicep but not listed in infra/app-settings.json"
    assert required - set_in_bicep == set(), "listed as required but not set by main.bicep"


def test_contract_is_well_formed() -> None:
    contract = load_settings_contract()
    assert set(contract) == {"required", "localOnly"}
    assert not set(contract["required"]) & set(contract["localOnly"])
    for section in contract.values():
        for name, why in section.items():
            assert isinstance(why, str) and len(why) > 10, f"{name} needs a reason"


def test_no_local_only_or_forbidden_setting_is_deployed() -> None:
    contract = load_settings_contract()
    deployed = set(app_settings())
    assert not deployed & set(contract["localOnly"])
    assert not deployed & FORBIDDEN_SETTINGS


def test_contract_covers_every_setting_the_code_reads() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from shared.settings import Settings  # type: ignore[import-not-found]
    except ImportError as exc:  # pragma: no cover - the app package moved
        pytest.skip(f"shared.settings not importable: {exc}")
    finally:
        sys.path.remove(str(ROOT))
    read_by_code = set(Settings.ENV_NAMES.values())
    # Read by the Functions host / the runtime rather than Settings.
    read_by_code |= {"ROTATION_SWEEP_SCHEDULE", "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    contract = load_settings_contract()
    known = set(contract["required"]) | set(contract["localOnly"])
    assert read_by_code - known == set(), "settings read by the code that infra/app-settings.json does not mention"


def test_identity_based_settings_have_the_right_values() -> None:
    settings = app_settings()
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__accountName"] == "storageAccountName"
    assert settings["AzureWebJobsStorage__blobServiceUri"].startswith("https://${storageAccountName}.blob.")
    assert settings["ROTATION_VAULT_CREDENTIAL"] == "default"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "Authorization=AAD"
    assert settings["ROTATION_ALLOWED_VAULTS"]["function"]["type"] == "join"
    # The lease container the app uses is the one storage.bicep creates.
    assert settings["ROTATION_LEASE_CONTAINER"] == "leaseContainerName"
    assert var_value(INFRA / "main.bicep", "leaseContainerName") == "rotation-locks"


def test_function_app_receives_the_settings() -> None:
    main = parse(INFRA / "main.bicep")
    params = body(main["modules"]["functionApp"])["params"]
    assert params["appSettings"] == "appSettings"
    site = only_resource(MODULES / "function-app.bicep", "Microsoft.Web/sites")
    loop = site["properties"]["siteConfig"]["appSettings"]
    # [for setting in items(appSettings): { name: setting.key, value: setting.value }]
    source = loop["loop_type"]["detail"]["array_name"]["function"]
    assert source == {"type": "items", "parameters": {"arg_1": "appSettings"}}
    assert set(loop["config"]) == {"name", "value"}


# ----------------------------------------------------------------- function app


def test_function_app_is_flex_consumption_python_311_with_system_identity() -> None:
    path = MODULES / "function-app.bicep"
    plan = only_resource(path, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    site = only_resource(path, "Microsoft.Web/sites")
    assert site["kind"] == "functionapp,linux"
    assert site["identity"] == {"type": "SystemAssigned"}
    props = site["properties"]
    assert props["httpsOnly"] is True
    assert props["siteConfig"]["minTlsVersion"] == "1.2"
    assert props["siteConfig"]["ftpsState"] == "Disabled"
    config = props["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["authentication"] == {"type": "SystemAssignedIdentity"}
    assert "virtualNetworkSubnetId" in props


def test_basic_publishing_credentials_are_disabled() -> None:
    path = MODULES / "function-app.bicep"
    policies = resources(path, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {body(p)["name"] for p in policies.values()} == {"ftp", "scm"}
    assert all(body(p)["properties"]["allow"] is False for p in policies.values())


def test_azd_finds_the_function_app_by_service_tag() -> None:
    text = (MODULES / "function-app.bicep").read_text(encoding="utf-8")
    assert re.search(r"'azd-service-name':\s*'rotation'", text)


# ----------------------------------------------------------------- storage


def test_storage_account_is_entra_only_and_private() -> None:
    account = only_resource(MODULES / "storage.bicep", "Microsoft.Storage/storageAccounts")
    props = account["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["supportsHttpsTrafficOnly"] is True
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["defaultToOAuthAuthentication"] is True
    containers = resources(MODULES / "storage.bicep", "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert len(containers) == 3
    assert all(body(c)["properties"]["publicAccess"] == "None" for c in containers.values())


def test_storage_account_name_is_valid_by_construction() -> None:
    main = INFRA / "main.bicep"
    assert var_value(main, "storageAccountName") == "strot${resourceToken}"
    token = var_value(main, "resourceToken")["function"]
    assert token["type"] == "to_lower"
    assert token["parameters"]["string_to_change"]["function"]["type"] == "unique_string"
    # 'strot' + 13 characters of uniqueString: 18 lower-case letters/digits.
    assert len("strot") + 13 <= 24


# ----------------------------------------------------------------- key vaults


def test_created_vaults_use_rbac_soft_delete_and_purge_protection() -> None:
    vault = only_resource(MODULES / "keyvault.bicep", "Microsoft.KeyVault/vaults")
    props = vault["properties"]
    assert props["enableRbacAuthorization"] is True
    assert props["enableSoftDelete"] is True
    assert props["enablePurgeProtection"] is True
    assert "accessPolicies" not in props
    assert props["networkAcls"]["bypass"] == "AzureServices"


def test_vaults_are_created_or_referenced_from_one_list() -> None:
    main = parse(INFRA / "main.bicep")
    assert main["parameters"]["vaultNames"]["type"] == "array"
    assert main["parameters"]["createVaults"]["type"] == "bool"
    create = main["modules"]["keyVaults"]["config"]
    assert create["loop_type"]["type"] == "array"
    access = main["modules"]["vaultAccess"]["config"]
    assert access["loop_type"]["detail"]["array_name"] == "vaultList"
    scope = body(main["modules"]["vaultAccess"])["scope"]["function"]
    assert scope["type"] == "resource_group"
    vault = resources(MODULES / "vault-access.bicep", "Microsoft.KeyVault/vaults")["vault"]
    assert vault["existing"] is True


# ----------------------------------------------------------------- role assignments


# Modules granting custom roles of their own, checked by their own tests (tests/infra/test_rotator_roles.py).
CUSTOM_ROLE_MODULES = {"rotator-roles.bicep"}


def all_role_assignments() -> list[tuple[Path, str, dict[str, Any]]]:
    found = []
    for path in bicep_files():
        if path.name in CUSTOM_ROLE_MODULES:
            continue
        for name, res in resources(path, "Microsoft.Authorization/roleAssignments").items():
            found.append((path, name, res))
    return found


def test_role_assignments_are_scoped_to_single_resources() -> None:
    assignments = all_role_assignments()
    assert assignments, "no role assignments found"
    for path, name, res in assignments:
        config = body(res)
        assert "scope" in config, f"{path.name}:{name} has no scope, i.e. the whole resource group"
        symbol = symbol_of(config["scope"])
        declared = resources(path)
        assert symbol in declared, (
            f"{path.name}:{name} scope is not a resource of the file (resource group or subscription?)"
        )
        role = role_id_of(config, path)
        assert role in EXPECTED_ROLE_SCOPES, f"{path.name}:{name} grants an unexpected role {role}"
        assert declared[symbol]["type"] == EXPECTED_ROLE_SCOPES[role], (
            f"{path.name}:{name} is on the wrong resource type"
        )
        assert config["properties"]["principalType"] == "ServicePrincipal"
        # Deterministic name tied to the scope: re-deploys update, never duplicate.
        assert config["name"]["function"]["type"] == "guid"


def test_each_expected_role_is_assigned() -> None:
    granted = {role_id_of(body(res), path) for path, _, res in all_role_assignments()}
    assert granted == set(EXPECTED_ROLE_SCOPES)


def test_secrets_officer_is_assigned_per_vault_on_the_vault() -> None:
    path = MODULES / "vault-access.bicep"
    assignment = body(resources(path, "Microsoft.Authorization/roleAssignments")["secretsOfficer"])
    assert role_id_of(assignment, path) == KEY_VAULT_SECRETS_OFFICER
    assert assignment["scope"] == "vault"
    assert assignment["properties"]["principalId"] == "functionPrincipalId"
    # main.bicep deploys the module once per vault, in the vaults' resource group.
    main = parse(INFRA / "main.bicep")
    assert main["modules"]["vaultAccess"]["detail"]["path"] == "modules/vault-access.bicep"
    for path in bicep_files():
        if path.name != "vault-access.bicep" and path.name not in CUSTOM_ROLE_MODULES:
            for _, res in resources(path, "Microsoft.Authorization/roleAssignments").items():
                assert role_id_of(body(res), path) != KEY_VAULT_SECRETS_OFFICER


def test_main_declares_no_role_assignment_at_resource_group_scope() -> None:
    assert not resources(INFRA / "main.bicep", "Microsoft.Authorization/roleAssignments")
    assert not resources(INFRA / "eventgrid.bicep", "Microsoft.Authorization/roleAssignments")


# ----------------------------------------------------------------- event grid


def subscription_config() -> dict[str, Any]:
    return only_resource(MODULES / "vault-subscription.bicep", "Microsoft.EventGrid/systemTopics/eventSubscriptions")


def test_subscription_filters_exactly_the_two_key_vault_event_types() -> None:
    props = subscription_config()["properties"]
    assert props["filter"]["includedEventTypes"] == KEY_VAULT_EVENT_TYPES
    assert set(props["filter"]) == {"includedEventTypes"}, "no extra filters that could drop events"
    assert props["eventDeliverySchema"] == "EventGridSchema"


def test_subscription_targets_the_rotate_on_event_function() -> None:
    destination = subscription_config()["properties"]["destination"]
    assert destination["endpointType"] == "AzureFunction"
    assert destination["properties"]["resourceId"] == "functionResourceId"
    assert destination["properties"]["maxEventsPerBatch"] == 1
    stage_two = INFRA / "eventgrid.bicep"
    assert var_value(stage_two, "eventFunctionName") == EVENT_FUNCTION_NAME
    resource_id = var_value(stage_two, "functionResourceId")["function"]
    assert resource_id["type"] == "resource_id"
    assert resource_id["parameters"]["resource_type"] == "Microsoft.Web/sites/functions"
    assert resource_id["parameters"]["resource_name_1"] == "functionAppName"
    assert resource_id["parameters"]["resource_name_2"] == "eventFunctionName"
    params = body(parse(stage_two)["modules"]["subscriptions"])["params"]
    assert params["functionResourceId"] == "functionResourceId"


def indexed_functions() -> dict[str, dict[str, Any]]:
    """Function name -> function.json of the app as the Functions host indexes it."""
    import importlib

    sys.path.insert(0, str(ROOT))
    try:
        import function_app  # type: ignore[import-not-found]

        app = importlib.reload(function_app).app  # get_functions() works once per app object
    except ImportError as exc:  # pragma: no cover - app not importable here
        pytest.skip(f"function_app not importable: {exc}")
    finally:
        sys.path.remove(str(ROOT))
    return {f.get_function_name(): json.loads(f.get_function_json()) for f in app.get_functions()}


def test_event_function_exists_in_the_python_app() -> None:
    functions = indexed_functions()
    assert EVENT_FUNCTION_NAME in functions, (
        f"the subscription targets a function the app does not have: {sorted(functions)}"
    )
    bindings = functions[EVENT_FUNCTION_NAME]["bindings"]
    assert [b["type"] for b in bindings if b["direction"] == "IN"][:1] == ["eventGridTrigger"]


def test_binding_expressions_are_deployed_settings() -> None:
    """A %NAME% in a binding (e.g. the sweep schedule) is resolved by the host
    from the app settings; a missing one stops the host from starting."""
    referenced = set(re.findall(r"%([A-Za-z0-9_]+)%", json.dumps(indexed_functions())))
    assert referenced <= set(load_settings_contract()["required"])


def test_subscription_retries_and_dead_letters_with_identity() -> None:
    props = subscription_config()["properties"]
    assert set(props["retryPolicy"]) == {"maxDeliveryAttempts", "eventTimeToLiveInMinutes"}
    dead_letter = props["deadLetterWithResourceIdentity"]
    assert dead_letter["identity"] == {"type": "SystemAssigned"}
    assert dead_letter["deadLetterDestination"]["endpointType"] == "StorageBlob"
    assert dead_letter["deadLetterDestination"]["properties"]["blobContainerName"] == "deadLetterContainerName"
    assert "deadLetterDestination" not in props, "key-based dead-lettering would fail: shared keys are disabled"


def test_one_system_topic_per_vault_with_identity() -> None:
    topic = only_resource(MODULES / "vault-access.bicep", "Microsoft.EventGrid/systemTopics")
    assert topic["properties"]["topicType"] == "Microsoft.KeyVault.vaults"
    assert symbol_of(topic["properties"]["source"]["operator"]["operands"]["operand_1"]) == "vault"
    assert topic["identity"] == {"type": "SystemAssigned"}
    # The dead-letter writers are exactly these topics' identities.
    main = parse(INFRA / "main.bicep")
    principals = body(main["modules"]["deadLetterAccess"])["params"]["principalIds"]
    assert "systemTopicPrincipalId" in json.dumps(principals)


def test_custom_topic_for_secret_rotated_is_entra_only() -> None:
    topic = only_resource(MODULES / "event-topic.bicep", "Microsoft.EventGrid/topics")
    assert topic["properties"]["disableLocalAuth"] is True
    assert topic["properties"]["minimumTlsVersionAllowed"] == "1.2"


def test_stage_one_outputs_exactly_the_parameters_stage_two_needs() -> None:
    main = INFRA / "main.bicep"
    stage_two = parse(INFRA / "eventgrid.bicep")["parameters"]
    without_default = {name for name, p in stage_two.items() if p["default"] is None}
    handed_over = set(var_value(main, "eventGridParameters")["parameters"])
    assert handed_over == without_default
    assert handed_over <= set(stage_two)
    # System topic names are derived identically where created and where subscribed.
    created = body(parse(main)["modules"]["vaultAccess"])["params"]["systemTopicName"]
    targets = var_value(main, "subscriptionTargets")
    assert targets["config"]["systemTopicName"] == created == "${systemTopicPrefix}${name}"


# ----------------------------------------------------------------- network


def test_vnet_integration_is_optional_and_delegated_to_container_apps_environments() -> None:
    main = parse(INFRA / "main.bicep")
    assert main["parameters"]["enableVnetIntegration"]["default"] is False
    vnet = only_resource(MODULES / "network.bicep", "Microsoft.Network/virtualNetworks")
    delegations = [
        d["properties"]["serviceName"]
        for subnet in vnet["properties"]["subnets"]
        for d in subnet["properties"].get("delegations", [])
    ]
    assert delegations == ["Microsoft.App/environments"]


# ----------------------------------------------------------------- parameter files and azd


def main_parameters() -> dict[str, dict[str, Any]]:
    return parse(INFRA / "main.bicep")["parameters"]


def test_azd_parameters_file_maps_onto_main_bicep() -> None:
    data = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    given = set(data["parameters"])
    declared = main_parameters()
    assert given <= set(declared)
    assert {n for n, p in declared.items() if p["default"] is None} <= given


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_environment_bicepparam_files(env: str) -> None:
    text = (INFRA / f"main.{env}.bicepparam").read_text(encoding="utf-8")
    assert re.search(r"^using '\./main\.bicep'$", text, re.MULTILINE)
    given = re.findall(r"^param (\w+) =", text, re.MULTILINE)
    assert len(given) == len(set(given)), "a parameter is set twice"
    declared = main_parameters()
    assert set(given) <= set(declared)
    assert {n for n, p in declared.items() if p["default"] is None} <= set(given)
    assert re.search(r"^param vaultNames = \[\s*\n\s*'[a-z0-9-]{3,24}'", text, re.MULTILINE)


def test_azure_yaml_deploys_the_rotation_service_and_runs_stage_two() -> None:
    text = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    service = re.search(r"^services:\n  rotation:\n((?:    .*\n)+)", text, re.MULTILINE)
    assert service, "service 'rotation' missing"
    lines = {line.strip() for line in service.group(1).splitlines()}
    assert {"project: .", "language: python", "host: function"} <= lines
    assert re.search(r"^  postdeploy:\n(?:    .*\n)*    run: \./infra/hooks/postdeploy\.sh$", text, re.MULTILINE)
    hook = INFRA / "hooks" / "postdeploy.sh"
    assert hook.stat().st_mode & stat.S_IXUSR


def test_hook_inputs_are_stage_one_outputs() -> None:
    outputs = set(parse(INFRA / "main.bicep")["outputs"])
    text = (INFRA / "hooks" / "postdeploy.sh").read_text(encoding="utf-8")
    required = re.search(r"^for name in ([A-Z_ ]+); do$", text, re.MULTILINE)
    assert required
    provided_by_azd = {"AZURE_SUBSCRIPTION_ID", "AZURE_RESOURCE_GROUP", "AZURE_ENV_NAME"}
    assert set(required.group(1).split()) - provided_by_azd <= outputs


# ----------------------------------------------------------------- the hook, against a fake az


FAKE_AZ = textwrap.dedent(
    """\
    #!/bin/sh
    # Fake Azure CLI: logs each call; `functionapp function show` fails until
    # it has been asked $FAKE_AZ_INDEX_AFTER times.
    echo "$*" >> "$FAKE_AZ_LOG"
    case "$1 $2" in
      "account show") exit 0 ;;
      "functionapp function")
        n=$(grep -c "^functionapp function show" "$FAKE_AZ_LOG")
        [ "$n" -gt "${FAKE_AZ_INDEX_AFTER:-0}" ] && exit 0
        exit 3 ;;
      "deployment group")
        for arg in "$@"; do
          case "$arg" in @*) cp "${arg#@}" "$FAKE_AZ_PARAMS" ;; esac
        done
        exit 0 ;;
    esac
    exit 2
    """
)


def run_hook(tmp_path: Path, **env_overrides: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "az"
    fake.write_text(FAKE_AZ, encoding="utf-8")
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_AZ_LOG": str(tmp_path / "az.log"),
        "FAKE_AZ_PARAMS": str(tmp_path / "params.json"),
        "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
        "AZURE_RESOURCE_GROUP": "rg-rotation-dev",
        "AZURE_ENV_NAME": "dev",
        "AZURE_FUNCTION_APP_NAME": "func-rotation-abc",
        "ROTATION_EVENTGRID_PARAMETERS": json.dumps(
            {"parameters": {"functionAppName": {"value": "func-rotation-abc"}}}
        ),
        "ROTATION_INDEX_POLL_SECONDS": "0",
    }
    env.update(env_overrides)
    (tmp_path / "az.log").touch()
    return subprocess.run(
        ["sh", str(INFRA / "hooks" / "postdeploy.sh")],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hook_waits_for_the_function_then_deploys_stage_two(tmp_path: Path) -> None:
    result = run_hook(tmp_path, FAKE_AZ_INDEX_AFTER="2")
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "az.log").read_text(encoding="utf-8").splitlines()
    shows = [c for c in calls if c.startswith("functionapp function show")]
    assert len(shows) == 3
    assert all(f"--function-name {EVENT_FUNCTION_NAME}" in c for c in shows)
    deploys = [c for c in calls if c.startswith("deployment group create")]
    assert len(deploys) == 1
    assert f"--template-file {INFRA / 'eventgrid.bicep'}" in deploys[0]
    assert "--resource-group rg-rotation-dev" in deploys[0]
    handed = json.loads((tmp_path / "params.json").read_text(encoding="utf-8"))
    assert handed["parameters"]["functionAppName"]["value"] == "func-rotation-abc"


def test_hook_fails_when_the_function_never_appears(tmp_path: Path) -> None:
    result = run_hook(tmp_path, FAKE_AZ_INDEX_AFTER="1000", ROTATION_INDEX_WAIT_SECONDS="0")
    assert result.returncode != 0
    assert "did not appear" in result.stderr
    assert "deployment group create" not in (tmp_path / "az.log").read_text(encoding="utf-8")


def test_hook_fails_without_stage_one_outputs(tmp_path: Path) -> None:
    result = run_hook(tmp_path, ROTATION_EVENTGRID_PARAMETERS="")
    assert result.returncode != 0
    assert "ROTATION_EVENTGRID_PARAMETERS is not set" in result.stderr
