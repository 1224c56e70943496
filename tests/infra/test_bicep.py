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
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MODULES = INFRA / "modules"

# Built-in role definition ids (names as in the Azure portal).
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"  # must appear nowhere any more
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
STORAGE_BLOB_DATA_CONTRIBUTOR = "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
EVENTGRID_DATA_SENDER = "d5a91429-5739-47e2-a06b-3470a27159e7"
MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
# The project's custom roles (modules/vault-roles.bicep), named by the module
# parameter that carries their GUID.
SECRET_METADATA_READER = "custom:metadataReaderRoleGuid"
SECRET_ROTATOR = "custom:secretWriterRoleGuid"

CONTAINER = "Microsoft.Storage/storageAccounts/blobServices/containers"
VAULT_TYPE = "Microsoft.KeyVault/vaults"
SECRET_TYPE = "Microsoft.KeyVault/vaults/secrets"

# Role -> the only resource types it may be assigned on, unconditionally.
EXPECTED_ROLE_SCOPES = {
    SECRET_METADATA_READER: {VAULT_TYPE},
    SECRET_ROTATOR: {SECRET_TYPE},
    KEY_VAULT_SECRETS_USER: {SECRET_TYPE},
    STORAGE_BLOB_DATA_OWNER: {CONTAINER},
    STORAGE_BLOB_DATA_CONTRIBUTOR: {CONTAINER},
    EVENTGRID_DATA_SENDER: {"Microsoft.EventGrid/topics"},
    MONITORING_METRICS_PUBLISHER: {"Microsoft.Insights/components"},
}
# Broader grants that exist only behind an opt-in parameter (default false):
# (file, resource) -> (role, scope type, the parameter).
OPT_IN_BROAD_GRANTS = {
    ("vault-access.bicep", "tagManagedRotator"): (SECRET_ROTATOR, VAULT_TYPE, "grantTagManagedVaultWide"),
    ("app-roles.bicep", "accountWideOwner"): (STORAGE_BLOB_DATA_OWNER, "Microsoft.Storage/storageAccounts",
                                              "hostStorageAccountWide"),
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
def parse(path: Path) -> Mapping[str, Any]:
    return BicepParser().parse(file_path=path)


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def body(block: dict[str, Any]) -> dict[str, Any]:
    """The object of a resource/module, looking through loops and conditions."""
    config = block["config"]
    while isinstance(config, dict) and "config" in config and ("loop_type" in config or "condition" in config):
        config = config["config"]
    found: dict[str, Any] = config
    return found


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
        f"{path.name}: role must be named by subscriptionResourceId (built-in, or one of vault-roles.bicep)"
    )
    assert definition["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
    name = definition["parameters"]["resource_name_1"]
    tree = parse(path)
    if name in tree.get("parameters", {}):
        assert name in {"metadataReaderRoleGuid", "secretWriterRoleGuid", "roleGuid"}, (
            f"{path.name}: unknown role parameter {name}"
        )
        return f"custom:{name}"
    value = tree["variables"][name]["value"]
    assert re.fullmatch(r"[0-9a-f-]{36}", value), f"{path.name}: {name} is not a role id"
    return str(value)


def load_settings_contract() -> dict[str, dict[str, str]]:
    contract: dict[str, dict[str, str]] = json.loads((INFRA / "app-settings.json").read_text(encoding="utf-8"))
    return contract


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
    settings: dict[str, Any] = var_value(INFRA / "main.bicep", "appSettings")
    return settings


def test_app_settings_match_the_contract_exactly() -> None:
    contract = load_settings_contract()
    set_in_bicep = set(app_settings())
    required = set(contract["required"])
    assert set_in_bicep - required == set(), "set in main.bicep but not listed in infra/app-settings.json"
    assert required - set_in_bicep == set(), "listed as required but not set by main.bicep"


def test_contract_is_well_formed() -> None:
    contract = load_settings_contract()
    assert set(contract) == {"required", "localOnly", "platform"}
    assert not set(contract["required"]) & set(contract["localOnly"])
    assert not set(contract["platform"]) & (set(contract["required"]) | set(contract["localOnly"]))
    for section in contract.values():
        for name, why in section.items():
            assert isinstance(why, str) and len(why) > 10, f"{name} needs a reason"


def test_no_local_only_or_forbidden_setting_is_deployed() -> None:
    contract = load_settings_contract()
    deployed = set(app_settings())
    assert not deployed & set(contract["localOnly"])
    assert not deployed & FORBIDDEN_SETTINGS


def test_the_deployment_never_fakes_a_platform_setting() -> None:
    """WEBSITE_AUTH_ENABLED must come from App Service itself: an app setting
    of that name would make the app trust forgeable principal headers."""
    platform = set(load_settings_contract()["platform"])
    assert platform == {"WEBSITE_AUTH_ENABLED"}
    assert not set(app_settings()) & platform
    for path in [*bicep_files(), INFRA / "main.parameters.json", *INFRA.glob("*.bicepparam")]:
        code = re.sub(r"//[^\n]*", "", path.read_text(encoding="utf-8"))  # comments may explain it
        assert "WEBSITE_AUTH_ENABLED" not in code, path.name


def test_contract_covers_every_setting_the_code_reads() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from shared.config.settings import Settings
    except ImportError as exc:  # pragma: no cover - the app package moved
        pytest.skip(f"shared.config.settings not importable: {exc}")
    finally:
        sys.path.remove(str(ROOT))
    read_by_code = set(Settings.ENV_NAMES.values())
    # Read by the Functions host / the runtime rather than Settings.
    read_by_code |= {"ROTATION_SWEEP_SCHEDULE", "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    contract = load_settings_contract()
    known = set(contract["required"]) | set(contract["localOnly"]) | set(contract["platform"])
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


def test_function_app_is_flex_consumption_python_with_system_identity() -> None:
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
    # The version is the pythonVersion parameter (tests/build/test_python_versions.py).
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}
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
    # host state (a loop: azure-webjobs-hosts, azure-webjobs-secrets), deployment
    # package, leases, dead letters: every container anyone writes to exists
    # before any identity needs it, so no identity needs to create containers.
    assert set(containers) == {"hostContainers", "deploymentContainer", "leaseContainer", "deadLetterContainer"}
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


def condition_of(res: dict[str, Any]) -> Any:
    """The deploy condition of a resource (``= if (...)`` or ``[for ...: if(...)``), or None."""
    config = res["config"]
    while isinstance(config, dict) and "config" in config and ("loop_type" in config or "condition" in config):
        if config.get("condition") is not None:
            return config["condition"]
        config = config["config"]
    return None


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
        scope_type = declared[symbol]["type"]
        if role == "custom:roleGuid":  # secret-access.bicep: the role its callers pass
            assert (path.name, scope_type) == ("secret-access.bicep", SECRET_TYPE)
            assert secret_access_roles() <= {r for r, types in EXPECTED_ROLE_SCOPES.items() if SECRET_TYPE in types}
            continue
        assert role in EXPECTED_ROLE_SCOPES, f"{path.name}:{name} grants an unexpected role {role}"
        opt_in = OPT_IN_BROAD_GRANTS.get((path.name, name))
        if opt_in is not None:
            assert (role, scope_type) == opt_in[:2]
            assert opt_in[2] in json.dumps(condition_of(res)), f"{path.name}:{name} is not behind {opt_in[2]}"
        else:
            assert scope_type in EXPECTED_ROLE_SCOPES[role], f"{path.name}:{name} is on the wrong resource type"
        assert config["properties"]["principalType"] == "ServicePrincipal"
        # Deterministic name tied to the scope: re-deploys update, never duplicate.
        assert config["name"]["function"]["type"] == "guid"


def secret_access_roles() -> set[str]:
    """Roles vault-access.bicep hands to secret-access.bicep (roleGuid)."""
    path = MODULES / "vault-access.bicep"
    tree = parse(path)
    roles = set()
    for module in tree["modules"].values():
        assert module["detail"]["path"] == "secret-access.bicep"
        given = body(module)["params"]["roleGuid"]
        roles.add(f"custom:{given}" if given in tree["parameters"] else tree["variables"][given]["value"])
    return roles


def test_each_expected_role_is_assigned() -> None:
    granted = {role_id_of(body(res), path) for path, _, res in all_role_assignments()}
    granted = (granted - {"custom:roleGuid"}) | secret_access_roles()
    assert granted == set(EXPECTED_ROLE_SCOPES)


def test_opt_in_broad_grants_are_off_by_default() -> None:
    main = main_parameters()
    for (file, _), (_, _, param) in OPT_IN_BROAD_GRANTS.items():
        assert parse(MODULES / file)["parameters"][param]["default"] is False
        assert main[param]["default"] is False


def test_no_secrets_officer_and_no_vault_wide_write_remains() -> None:
    """Item 10 of issue 10: the app held Key Vault Secrets Officer on whole vaults."""
    for path in bicep_files():
        assert KEY_VAULT_SECRETS_OFFICER not in path.read_text(encoding="utf-8"), path.name
    for path, name, res in all_role_assignments():
        config = body(res)
        scope = symbol_of(config["scope"])
        assert scope is not None, f"{path.name}:{name} is not scoped to a resource"
        if resources(path)[scope]["type"] == VAULT_TYPE:
            role = role_id_of(config, path)
            assert role == SECRET_METADATA_READER or (path.name, name) in OPT_IN_BROAD_GRANTS, (
                f"{path.name}:{name} grants {role} on a whole vault"
            )


def test_main_declares_no_role_assignment_at_resource_group_scope() -> None:
    assert not resources(INFRA / "main.bicep", "Microsoft.Authorization/roleAssignments")
    assert not resources(INFRA / "eventgrid.bicep", "Microsoft.Authorization/roleAssignments")


# ------------------------------------------------- key vault rights from rotation.json


class BicepEval:
    """Just enough of Bicep's expression language to evaluate the loop
    conditions and names the per-secret role assignments use, on pycep's tree.
    pycep gives identifiers and string literals alike as Python strings: a
    string is a variable when ``env`` has it, else a literal."""

    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env

    def __call__(self, node: Any) -> Any:
        if isinstance(node, str) and "${" in node:
            return re.sub(r"\$\{([^}]*)\}", lambda m: str(self.interpolated(m.group(1))), node)
        if isinstance(node, str):
            return self.env.get(node, node)
        if isinstance(node, (bool, int)) or node is None:
            return node
        if isinstance(node, list):
            return [self(n) for n in node]
        if "operator" in node:
            op = node["operator"]
            kind, args = op["type"], op["operands"]
            if kind == "property_accessor":
                return self.access(self(args["operand_1"]), args["operand_2"])
            if kind == "not":
                return not self(args["bool_value"])
            if kind == "and":
                return all(self(v) for v in args.values())
            if kind == "or":
                return any(self(v) for v in args.values())
            if kind == "conditional":
                return self(args["true_value"]) if self(args["condition"]) else self(args["false_value"])
            if kind == "equals":
                return self(args["operand_1"]) == self(args["operand_2"])
            if kind == "not_equals":
                return self(args["operand_1"]) != self(args["operand_2"])
            raise AssertionError(f"operator {kind} not supported by this evaluator")
        if "function" in node:
            fn = node["function"]
            kind, params = fn["type"], fn["parameters"]
            if kind == "contains":
                return self(params["item_to_find"]) in self(params["container"])
            if kind == "to_lower":
                return str(self(params["string_to_change"])).lower()
            if kind == "empty":
                return not self(params["item_to_test"])
            if kind == "items":
                obj = self(params["arg_1"])
                return [{"key": k, "value": obj[k]} for k in sorted(obj, key=str.lower)]
            raise AssertionError(f"function {kind} not supported by this evaluator")
        return {k: self(v) for k, v in node.items()}

    def interpolated(self, expression: str) -> Any:
        """A string interpolation's expression: a dotted path, optionally inside toLower(...)."""
        lower = re.fullmatch(r"toLower\((.*)\)", expression.strip())
        path = (lower.group(1) if lower else expression).strip().split(".")
        value = self.env[path[0]]
        for part in path[1:]:
            value = value[part]
        return str(value).lower() if lower else value

    def access(self, value: Any, chain: Any) -> Any:
        if isinstance(chain, str):
            return value[chain]
        operands = chain["operator"]["operands"]
        assert chain["operator"]["type"] == "property_accessor"
        return self.access(self.access(value, operands["operand_1"]), operands["operand_2"])


def operator_file() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / "rotation.json").read_text(encoding="utf-8"))
    return data


def module_loop(name: str) -> tuple[str, Any, Any, dict[str, Any]]:
    """(item name, array expression, condition, body) of a module loop of vault-access.bicep."""
    config = parse(MODULES / "vault-access.bicep")["modules"][name]["config"]
    detail = config["loop_type"]["detail"]
    assert "index_name" not in detail
    return detail["item_name"], detail["array_name"], config["condition"], config["config"]


def granted_secrets(module: str, env: dict[str, Any]) -> dict[str, str]:
    """Secret name -> role of every secret-access.bicep deployment the module
    loop ``module`` of vault-access.bicep makes, evaluated with the module
    parameters ``env``."""
    tree = parse(MODULES / "vault-access.bicep")
    assert tree["modules"][module]["detail"]["path"] == "secret-access.bicep"
    variables = {k: v["value"] for k, v in tree["variables"].items() if not isinstance(v["value"], dict)}
    item, array, condition, config = module_loop(module)
    params = config["params"]
    assert params["functionPrincipalId"] == "functionPrincipalId"
    assert params["vaultName"] == {"operator": {"type": "property_accessor", "operands": {
        "operand_1": "vault", "operand_2": "name"}}}
    # Deployment names are unique per vault, secret and purpose.
    assert "uniqueString(vaultName, toLower(" in config["name"]
    role = params["roleGuid"]
    role = f"custom:{role}" if role in tree["parameters"] else tree["variables"][role]["value"]
    granted = {}
    for element in BicepEval({**variables, **env})(array):
        bound = BicepEval({**variables, **env, item: element})
        if condition is None or bound(condition):
            granted[bound(params["secretName"])] = role
    return granted


def test_the_per_secret_module_assigns_one_role_on_that_secret() -> None:
    path = MODULES / "secret-access.bicep"
    assignment = only_resource(path, "Microsoft.Authorization/roleAssignments")
    assert assignment["scope"] == "secret"
    secret = body(resources(path)["secret"])
    assert resources(path)["secret"]["type"] == SECRET_TYPE and resources(path)["secret"]["existing"] is True
    assert secret == {"parent": "vault", "name": "secretName"}
    assert assignment["properties"]["principalId"] == "functionPrincipalId"
    assert role_id_of(assignment, path) == "custom:roleGuid"


def vault_access_params() -> dict[str, Any]:
    params: dict[str, Any] = body(parse(INFRA / "main.bicep")["modules"]["vaultAccess"])["params"]
    return params


def test_the_operator_file_is_loaded_from_the_repository_root_at_compile_time() -> None:
    load = var_value(INFRA / "main.bicep", "operatorConfig")["function"]
    assert load["type"] == "load_json_content" and load["parameters"]["json_path"] is None
    # loadJsonContent resolves its path relative to the Bicep file that calls it.
    assert (INFRA / load["parameters"]["file_path"]).resolve() == (ROOT / "rotation.json").resolve()
    params = vault_access_params()
    assert params["secretPolicies"] == {
        "operator": {"type": "property_accessor", "operands": {"operand_1": "operatorConfig", "operand_2": "secrets"}}
    }
    assert params["adminSecretNames"] == "adminSecretNames"
    assert params["tagManagedPatterns"] == "tagManagedPatterns"
    assert params["grantTagManagedVaultWide"] == "grantTagManagedVaultWide"
    assert params["metadataReaderRoleGuid"] == {"operator": {"type": "property_accessor", "operands": {
        "operand_1": "vaultRoles", "operand_2": {"operator": {"type": "property_accessor", "operands": {
            "operand_1": "outputs", "operand_2": "metadataReaderRoleGuid"}}}}}}


def test_each_secret_rotation_json_manages_gets_the_rotator_role_on_that_secret_only() -> None:
    operator = operator_file()
    env = {"secretPolicies": operator["secrets"]}
    granted = granted_secrets("secretRotator", env)
    managed = {name for name, policy in operator["secrets"].items()
               if policy["rotator"].lower() != "manual" or "generator" in policy}
    assert set(granted) == managed
    assert set(granted.values()) == {SECRET_ROTATOR}
    # The standard inventory: seven rotated secrets, the manual-only ones get no write right.
    assert managed == {"jwt-signing-key", "database-connection-string", "redis-password", "session-encryption-key",
                       "azure-openai-api-key", "foundry-api-key", "api-gateway-client-secret"}
    assert "openai-api-key" in operator["secrets"] and "openai-api-key" not in granted


def test_a_manual_only_or_newly_listed_secret_follows_the_file() -> None:
    """The rights are a function of the file, not of the standard inventory."""
    policies = {"team-a-token": {"rotator": "random"}, "Vendor-Key": {"rotator": "manual"},
                "billing-db": {"rotator": "postgres", "target": "billing"},
                # manual-only, but an explicit HTTP force may rotate it with this generator
                "master-key": {"rotator": "manual", "generator": "random"}}
    granted = granted_secrets("secretRotator", {"secretPolicies": policies})
    assert set(granted) == {"team-a-token", "billing-db", "master-key"}


def test_admin_secrets_are_readable_never_writable() -> None:
    operator = operator_file()
    main = INFRA / "main.bicep"
    main_vars = {"operatorConfig": operator}
    admin_names = BicepEval(main_vars)(var_value(main, "adminSecretNames"))
    assert admin_names == operator["adminSecrets"]
    granted = granted_secrets("adminSecretReader", {"adminSecretNames": admin_names})
    assert granted == {name: KEY_VAULT_SECRETS_USER for name in operator["adminSecrets"]}
    rotated = granted_secrets("secretRotator", {"secretPolicies": operator["secrets"]})
    assert not set(granted) & set(rotated)


def test_only_hmac_consumers_keys_are_readable() -> None:
    config = {"consumers": {
        "bridge": {"url": "https://bridge.internal/refresh", "auth": "entra", "audience": "api://bridge"},
        "backend": {"url": "https://backend.internal/refresh", "auth": "hmac",
                    "hmacSecret": "backend-refresh-hmac-key"},
        "audit": {"url": "https://audit.internal/refresh", "auth": "none"},
    }, "secrets": {"jwt-signing-key": ["bridge", "backend"]}}
    main = INFRA / "main.bicep"
    catalog = BicepEval({"consumersConfig": config})(var_value(main, "consumerCatalog"))
    assert BicepEval({"consumersConfig": {}})(var_value(main, "consumerCatalog")) == {}
    assert vault_access_params()["consumerCatalog"] == "consumerCatalog"
    granted = granted_secrets("hmacKeyReader", {"consumerCatalog": catalog})
    assert granted == {"backend-refresh-hmac-key": KEY_VAULT_SECRETS_USER}


def test_tag_managed_secrets_get_vault_wide_rights_only_by_explicit_opt_in() -> None:
    path = MODULES / "vault-access.bicep"
    condition = condition_of(parse(path)["resources"]["tagManagedRotator"])
    patterns = [{"pattern": "team-*", "rotators": ["random", "jwt"]}]
    for opt_in, expected in ((False, False), (True, True)):
        env = {"grantTagManagedVaultWide": opt_in, "tagManagedPatterns": patterns}
        assert BicepEval(env)(condition) is expected
    assert BicepEval({"grantTagManagedVaultWide": True, "tagManagedPatterns": []})(condition) is False
    main = INFRA / "main.bicep"
    for operator in (operator_file(), {"tagManaged": patterns}, {}):
        expected_patterns = operator.get("tagManaged", [])
        assert BicepEval({"operatorConfig": operator})(var_value(main, "tagManagedPatterns")) == expected_patterns


def test_custom_roles_carry_only_the_data_actions_rotation_needs() -> None:
    path = MODULES / "vault-roles.bicep"
    definitions = {name: body(res) for name, res in resources(path, "Microsoft.Authorization/roleDefinitions").items()}
    assert set(definitions) == {"metadataReader", "secretWriter"}
    expected = {
        "metadataReader": ["Microsoft.KeyVault/vaults/secrets/readMetadata/action"],
        "secretWriter": [
            "Microsoft.KeyVault/vaults/secrets/getSecret/action",
            "Microsoft.KeyVault/vaults/secrets/setSecret/action",
            "Microsoft.KeyVault/vaults/secrets/update/action",
        ],
    }
    for name, definition in definitions.items():
        props = definition["properties"]
        assert props["type"] == "customRole"
        assert props["permissions"] == [
            {"actions": [], "notActions": [], "dataActions": expected[name], "notDataActions": []}
        ]
        assert len(props["assignableScopes"]) == 1 and "resource_group" in json.dumps(props["assignableScopes"])
        # A fixed GUID per environment and resource group: re-deploys update the role in place.
        assert var_value(path, definition["name"])["function"]["type"] == "guid"
    main = parse(INFRA / "main.bicep")
    roles = body(main["modules"]["vaultRoles"])
    assert roles["scope"]["function"]["type"] == "resource_group"
    assert vault_access_params()["secretWriterRoleGuid"] == {"operator": {"type": "property_accessor", "operands": {
        "operand_1": "vaultRoles", "operand_2": {"operator": {"type": "property_accessor", "operands": {
            "operand_1": "outputs", "operand_2": "secretWriterRoleGuid"}}}}}}


def test_the_metadata_reader_is_the_only_unconditional_vault_scope_grant() -> None:
    path = MODULES / "vault-access.bicep"
    reader = body(resources(path, "Microsoft.Authorization/roleAssignments")["metadataReader"])
    assert reader["scope"] == "vault" and role_id_of(reader, path) == SECRET_METADATA_READER
    assert reader["properties"]["principalId"] == "functionPrincipalId"
    main = parse(INFRA / "main.bicep")
    assert main["modules"]["vaultAccess"]["detail"]["path"] == "modules/vault-access.bicep"


# ----------------------------------------------------------------- storage rights


def test_the_apps_storage_rights_are_per_container() -> None:
    path = MODULES / "app-roles.bicep"
    declared = resources(path)
    by_container: dict[str, set[str]] = {}
    for name, res in resources(path, "Microsoft.Authorization/roleAssignments").items():
        config = body(res)
        scope = symbol_of(config["scope"])
        assert scope is not None, f"{path.name}:{name} is not scoped to a resource"
        target = declared[scope]
        if (path.name, name) in OPT_IN_BROAD_GRANTS or not target["type"].startswith("Microsoft.Storage"):
            continue
        assert target["type"] == CONTAINER and condition_of(res) is None
        container_name = body(target)["name"]
        by_container.setdefault(json.dumps(container_name), set()).add(role_id_of(config, path))
    assert by_container == {
        '"name"': {STORAGE_BLOB_DATA_OWNER},  # the host containers (a loop over hostContainerNames)
        '"deploymentContainerName"': {STORAGE_BLOB_DATA_OWNER},
        '"leaseContainerName"': {STORAGE_BLOB_DATA_CONTRIBUTOR},
    }
    host_loop = parse(path)["resources"]["hostContainer"]["config"]["loop_type"]["detail"]
    assert host_loop["item_name"] == "name" and host_loop["array_name"] == "hostContainerNames"
    params = body(parse(INFRA / "main.bicep")["modules"]["appRoles"])["params"]
    assert params["leaseContainerName"] == "leaseContainerName"
    assert params["deploymentContainerName"] == "deploymentContainerName"
    assert params["hostStorageAccountWide"] == "hostStorageAccountWide"
    storage = parse(MODULES / "storage.bicep")
    assert storage["parameters"]["hostContainerNames"]["default"] == ["azure-webjobs-hosts", "azure-webjobs-secrets"]
    # The app has nothing on the dead-letter container; only the system topics write there.
    assert "deadLetter" not in (MODULES / "app-roles.bicep").read_text(encoding="utf-8")


# ----------------------------------------------------------------- app service authentication


def auth_settings() -> dict[str, Any]:
    found = resources(MODULES / "function-app.bicep", "Microsoft.Web/sites/config")
    assert set(found) == {"authSettings"}
    return found["authSettings"]


def test_app_service_authentication_is_on_exactly_when_a_role_is_required() -> None:
    res = auth_settings()
    assert condition_of(res) == {"operator": {"type": "not", "operands": {"bool_value": {
        "function": {"type": "empty", "parameters": {"item_to_test": "requiredRole"}}}}}}
    config = body(res)
    assert config["name"] == "authsettingsV2" and config["parent"] == "functionApp"
    props = config["properties"]
    assert props["platform"] == {"enabled": True}
    validation = props["globalValidation"]
    assert validation["requireAuthentication"] is True
    assert validation["unauthenticatedClientAction"] == "Return401"
    # Only the Event Grid extension's webhook (system key) is excluded; the API is not.
    assert validation["excludedPaths"] == ["/runtime/webhooks/eventgrid"]
    aad = props["identityProviders"]["azureActiveDirectory"]
    assert aad["enabled"] is True and aad["registration"]["clientId"] == "authClientId"
    assert "v2.0" in json.dumps(aad["registration"]["openIdIssuer"])
    assert props["httpSettings"]["requireHttps"] is True
    assert set(props["identityProviders"]) == {"azureActiveDirectory"}


def test_the_required_role_drives_both_the_setting_and_authentication() -> None:
    assert app_settings()["ROTATION_REQUIRED_ROLE"] == "requiredRole"
    params = body(parse(INFRA / "main.bicep")["modules"]["functionApp"])["params"]
    assert params["requiredRole"] == "requiredRole"
    assert params["authClientId"] == "authClientId"
    data = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert data["requiredRole"]["value"] == "${ROTATION_REQUIRED_ROLE=}"
    assert data["authClientId"]["value"] == "${ROTATION_AUTH_CLIENT_ID=}"


@pytest.mark.parametrize("env", ["dev", "prod"])
def test_a_parameter_file_that_requires_a_role_names_the_app_registration(env: str) -> None:
    text = (INFRA / f"main.{env}.bicepparam").read_text(encoding="utf-8")
    role = re.search(r"^param requiredRole = '([^']*)'", text, re.MULTILINE)
    client = re.search(r"^param authClientId = '([^']*)'", text, re.MULTILINE)
    assert role and client
    assert bool(role.group(1)) == bool(client.group(1))


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
        import function_app

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
    parameters: dict[str, dict[str, Any]] = parse(INFRA / "main.bicep")["parameters"]
    return parameters


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


def test_postgres_secrets_may_write_their_durable_intent_companion_only() -> None:
    """A single-credential rotation records its intent in <name>-rotation-intent before the password changes."""
    operator = operator_file()
    granted = granted_secrets("intentWriter", {"secretPolicies": operator["secrets"]})
    postgres = {name for name, policy in operator["secrets"].items() if policy["rotator"] == "postgres"}
    assert granted == {f"{name.lower()}-rotation-intent": SECRET_ROTATOR for name in postgres}
    assert granted  # the standard inventory rotates database-connection-string
