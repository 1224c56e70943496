"""The rotated Azure resources' roles (infra/modules/rotator-roles.bicep), checked offline with pycep.

Each kind of resource the key-slot rotator touches gets a custom role with
exactly the list/regenerate-keys actions, assignable in one resource group,
and it is assigned on each listed resource only, never on the group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.infra.test_bicep import INFRA, MODULES, body, parse, resources, symbol_of

MODULE = MODULES / "rotator-roles.bicep"
EXPECTED = {
    # role definition symbol: (actions, assignment symbol, resource type it is assigned on)
    "cognitiveKeySlots": ({"Microsoft.CognitiveServices/accounts/listKeys/action",
                           "Microsoft.CognitiveServices/accounts/regenerateKey/action"},
                          "cognitiveAssignments", "Microsoft.CognitiveServices/accounts"),
    "redisKeySlots": ({"Microsoft.Cache/redis/listKeys/action", "Microsoft.Cache/redis/regenerateKey/action"},
                      "redisAssignments", "Microsoft.Cache/redis"),
    "managedRedisKeySlots": ({"Microsoft.Cache/redisEnterprise/databases/listKeys/action",
                              "Microsoft.Cache/redisEnterprise/databases/regenerateKey/action"},
                             "managedRedisAssignments", "Microsoft.Cache/redisEnterprise/databases"),
}


def _role_symbol(expression: Any) -> str | None:
    operands = expression.get("operator", {}).get("operands", {}) if isinstance(expression, dict) else {}
    return operands.get("operand_1") if operands.get("operand_2") == "id" else None


def test_each_custom_role_allows_exactly_listing_and_regenerating_keys_in_one_resource_group() -> None:
    definitions = resources(MODULE, "Microsoft.Authorization/roleDefinitions")
    assert set(definitions) == set(EXPECTED)
    for symbol, (actions, _, _) in EXPECTED.items():
        props = body(definitions[symbol])["properties"]
        assert props["type"] == "CustomRole"
        assert len(props["permissions"]) == 1
        assert set(props["permissions"][0]["actions"]) == actions, f"{symbol} allows more than key rotation"
        assert not props["permissions"][0].get("dataActions")
        (scope,) = props["assignableScopes"]
        assert scope["operator"]["operands"]["operand_1"]["function"]["type"] == "resource_group"


def test_each_role_is_assigned_on_each_target_resource_only() -> None:
    declared = resources(MODULE)
    assignments = resources(MODULE, "Microsoft.Authorization/roleAssignments")
    assert {a for _, a, _ in EXPECTED.values()} == set(assignments)
    for role, (_, symbol, type_) in EXPECTED.items():
        config = body(assignments[symbol])
        target = symbol_of(config["scope"])
        assert target in declared and declared[target]["type"] == type_ and declared[target]["existing"] is True
        assert _role_symbol(config["properties"]["roleDefinitionId"]) == role
        assert config["properties"]["principalType"] == "ServicePrincipal"
        assert config["properties"]["principalId"] == "functionPrincipalId"
        assert config["name"]["function"]["type"] == "guid"


def test_main_wires_the_module_with_the_function_identity() -> None:
    module = parse(INFRA / "main.bicep")["modules"]["rotatorRoles"]
    assert module["detail"]["path"] == "modules/rotator-roles.bicep"
    params: dict[str, Any] = module["config"]["params"]
    assert set(params) == {"functionPrincipalId", "cognitiveAccountNames", "redisCacheNames",
                           "managedRedisClusterNames"}
    assert isinstance(Path(MODULE), Path) and MODULE.is_file()
