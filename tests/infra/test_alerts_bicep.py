"""Offline checks of the alerting Bicep (infra/modules/alerts.bicep): who is told, about what signal.

Each alert rule must exist, query the signal the app really emits (the
metric names of shared/adapters/telemetry.py; the KQL's attribute names are checked
against exported telemetry in tests/unit/test_telemetry.py) or the Event Grid
platform metric, and notify the one action group whose receivers are
parameters.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.telemetry import Metric
from tests.infra.test_bicep import INFRA, MODULES, ROOT, body, parse, var_value

ALERTS = MODULES / "alerts.bicep"

# rule key -> (metric the query reads, split per secret)
EXPECTED_LOG_ALERTS = {
    "rotation-failed": (Metric.RUNS, True),
    "secret-overdue": (Metric.SECRET_OVERDUE, True),
    "manual-secret-expiring": (Metric.SECRET_DAYS_TO_EXPIRY, True),
    "sweep-missing": (Metric.SWEEP_RUNS, False),
    "consumers-unacknowledged": (Metric.UNACKNOWLEDGED_AT_GRACE, True),
}


def log_alerts() -> dict[str, dict[str, Any]]:
    return {rule["key"]: rule for rule in var_value(ALERTS, "logAlerts")}


def loaded_file(expression: Any) -> tuple[Path, dict[str, Any]]:
    """The file a query expression loads with loadTextContent, and the replace() calls around it."""
    replacements: dict[str, Any] = {}
    function = expression["function"]
    while function["type"] == "replace":
        params = function["parameters"]
        replacements[params["old_string"]] = params["new_string"]
        function = params["original_string"]["function"]
    assert function["type"] == "load_text_content"
    return (MODULES / function["parameters"]["file_path"]).resolve(), replacements


def accessor(expression: Any) -> tuple[str, str]:
    operands = expression["operator"]["operands"]
    return operands["operand_1"], operands["operand_2"]


def test_every_expected_log_alert_rule_exists() -> None:
    assert set(log_alerts()) == set(EXPECTED_LOG_ALERTS)


@pytest.mark.parametrize("key", sorted(EXPECTED_LOG_ALERTS))
def test_each_log_alert_queries_the_metric_it_is_about(key: str) -> None:
    metric, per_secret = EXPECTED_LOG_ALERTS[key]
    rule = log_alerts()[key]
    path, replacements = loaded_file(rule["query"])
    assert path.parent == INFRA / "alerts" and path.is_file()
    kql = path.read_text(encoding="utf-8")
    assert re.search(rf'\| where name == "{re.escape(metric)}"', kql), f"{path.name} does not read {metric}"
    assert "customMetrics" in kql
    for placeholder in re.findall(r"\{[A-Za-z]+\}", kql):
        assert placeholder in replacements, f"{path.name}: {placeholder} is never filled in"
    listed = rule["dimensions"]
    listed = var_value(ALERTS, listed) if isinstance(listed, str) else listed
    dimensions = {d["name"] for d in listed}
    if per_secret:
        assert dimensions == {"vault", "secret"}
        assert re.search(r"\bby vault, secret\b", kql), "the split columns must be in the query's result"
    else:
        assert dimensions == set()


def test_log_alert_rules_use_the_application_insights_scope_and_the_action_group() -> None:
    resource = parse(ALERTS)["resources"]["logAlertRules"]
    assert resource["type"] == "Microsoft.Insights/scheduledQueryRules"
    assert resource["config"]["loop_type"]["detail"]["array_name"] == "logAlerts"
    props = body(resource)["properties"]
    assert props["scopes"] == ["appInsightsId"]
    assert [accessor(g) for g in props["actions"]["actionGroups"]] == [("actionGroup", "id")]
    [criterion] = props["criteria"]["allOf"]
    assert accessor(criterion["query"]) == ("rule", "query")
    assert accessor(criterion["dimensions"]) == ("rule", "dimensions")


def test_manual_secret_alert_takes_n_days_from_a_parameter_and_says_rotate_at_the_provider() -> None:
    rule = log_alerts()["manual-secret-expiring"]
    _, replacements = loaded_file(rule["query"])
    new = replacements["{warningDays}"]["function"]
    assert new["type"] == "string" and new["parameters"]["value_to_convert"] == "manualExpiryWarningDays"
    assert "${manualExpiryWarningDays}" in rule["displayName"]
    assert "provider" in rule["displayName"] and "at its provider" in rule["description"]
    assert parse(ALERTS)["parameters"]["manualExpiryWarningDays"]["type"] == "int"
    kql = (INFRA / "alerts" / "manual-secret-expiring.kql").read_text(encoding="utf-8")
    assert 'customDimensions["rotation.manual"]) =~ "true"' in kql


def test_sweep_alert_fires_when_no_run_completed_in_the_window() -> None:
    rule = log_alerts()["sweep-missing"]
    assert rule["operator"] == "LessThan" and rule["threshold"] == 1 and rule["measure"] == "runs"
    _, replacements = loaded_file(rule["query"])
    assert replacements["{maxAgeHours}"]["function"]["parameters"]["value_to_convert"] == "sweepMaxAgeHours"
    assert parse(ALERTS)["parameters"]["sweepMaxAgeHours"]["default"] == 26
    assert rule["window"] == "P2D", "the window must cover the 26 hours the query looks back"


def test_failed_for_good_means_failed_and_not_retried_by_event_grid() -> None:
    kql = (INFRA / "alerts" / "rotation-failed.kql").read_text(encoding="utf-8")
    assert '"rotation.outcome"]) == "failed"' in kql
    assert '"rotation.will_retry"]) !~ "true"' in kql


def test_dead_lettered_events_alert_on_every_system_topics_platform_metric() -> None:
    resource = parse(ALERTS)["resources"]["deadLetterAlerts"]
    assert resource["type"] == "Microsoft.Insights/metricAlerts"
    assert resource["config"]["loop_type"]["detail"]["array_name"] == "systemTopicIds"
    props = body(resource)["properties"]
    assert props["scopes"] == ["topicId"]
    assert props["targetResourceType"] == "Microsoft.EventGrid/systemTopics"
    [criterion] = props["criteria"]["allOf"]
    assert criterion["metricNamespace"] == "Microsoft.EventGrid/systemTopics"
    assert criterion["metricName"] == "DeadLetteredCount"
    assert (criterion["operator"], criterion["threshold"], criterion["timeAggregation"]) == ("GreaterThan", 0, "Total")
    assert [accessor(a["actionGroupId"]) for a in props["actions"]] == [("actionGroup", "id")]
    # main.bicep hands over the system topic of every allowed vault, named as where it is created.
    params = body(parse(INFRA / "main.bicep")["modules"]["alerts"])["params"]
    ids = params["systemTopicIds"]
    assert ids["loop_type"]["detail"]["array_name"] == "vaultList"
    function = ids["config"]["function"]
    assert function["type"] == "resource_id"
    assert "Microsoft.EventGrid/systemTopics" in json.dumps(function)
    assert "${systemTopicPrefix}${name}" in json.dumps(function)


def test_action_group_receivers_are_parameters() -> None:
    group = parse(ALERTS)["resources"]["actionGroup"]
    assert group["type"] == "Microsoft.Insights/actionGroups"
    props = body(group)["properties"]
    assert props["enabled"] is True
    assert props["emailReceivers"] == "emailReceivers" and props["webhookReceivers"] == "webhookReceivers"
    emails = var_value(ALERTS, "emailReceivers")
    assert emails["loop_type"]["detail"]["array_name"] == "alertEmailAddresses"
    assert "alertWebhookUrl" in json.dumps(var_value(ALERTS, "webhookReceivers"))
    params = parse(ALERTS)["parameters"]
    assert params["alertEmailAddresses"]["type"] == "array"
    assert any(d["type"] == "secure" for d in params["alertWebhookUrl"]["decorators"]), "a webhook URL may hold a token"
    main = parse(INFRA / "main.bicep")
    wired = body(main["modules"]["alerts"])["params"]
    assert wired["alertEmailAddresses"] == "alertEmailAddresses" and wired["alertWebhookUrl"] == "alertWebhookUrl"
    assert wired["manualExpiryWarningDays"] == "manualExpiryWarningDays"
    # monitoring.outputs.appInsightsId: the component the app reports to.
    outer = wired["appInsightsId"]["operator"]["operands"]
    assert outer["operand_1"] == "monitoring" and accessor(outer["operand_2"]) == ("outputs", "appInsightsId")


def test_workbook_shows_every_secret_from_the_app_insights_component() -> None:
    workbook = parse(ALERTS)["resources"]["workbook"]
    assert workbook["type"] == "Microsoft.Insights/workbooks"
    props = body(workbook)["properties"]
    assert props["sourceId"] == "appInsightsId" and props["category"] == "workbook"
    path, _ = loaded_file(props["serializedData"])
    data = json.loads(path.read_text(encoding="utf-8"))
    queries = {item["name"]: item["content"]["query"] for item in data["items"] if item["type"] == 3}
    secrets = queries["secrets"]
    for column in ("rotator", "version_age_days", "next_rotation_in_days", "last_outcome", "retirement_pending"):
        assert column in secrets, f"the per-secret table lacks {column}"
    assert Metric.RUNS in secrets and Metric.SECRET_VERSION_AGE in secrets
    assert '"rotation.outcome"]) == "failed"' in queries["failures"]


def test_host_exports_opentelemetry_and_keeps_per_function_execution_counts() -> None:
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    assert host["telemetryMode"] == "OpenTelemetry"
    assert host["logging"]["logLevel"].get("Host.Aggregator", "Information") in {"Information", "Trace", "Debug"}
    settings = var_value(INFRA / "main.bicep", "appSettings")
    assert settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"


def test_telemetry_dependencies_are_pinned() -> None:
    pins = dict(
        line.split("==", 1) for line in (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    )
    for package in ("azure-monitor-opentelemetry", "azure-core-tracing-opentelemetry", "opentelemetry-sdk"):
        assert package in pins
