#!/usr/bin/env python3
"""Writes the Grafana dashboards (runway-overview.json, runway-exporter-health.json).

The dashboards are built with Grafana Labs' builder library, grafana-foundation-sdk, so
their shape is Grafana's dashboard schema (the SDK's build for Grafana 11.6,
schemaVersion 41). The JSON files are committed and importable as they are; to change
them, edit this script and run scripts/dashboards.sh, which installs the pinned SDK
(dashboards/requirements.txt) into a scratch venv and runs it. The test command runs
scripts/dashboards.sh --check: the committed files must be what this script writes.
A test evaluates every panel's query against a real Prometheus.

    python3 dashboards/generate.py [OUT_DIR]   (OUT_DIR defaults to this directory)
"""
import json
import os
import sys

try:
    from grafana_foundation_sdk.builders import dashboard, gauge, prometheus, stat, table, timeseries
    from grafana_foundation_sdk.builders.common import StackingConfig
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.common import StackingMode
    from grafana_foundation_sdk.models.dashboard import (
        DashboardCursorSync, DataSourceRef, Threshold, ThresholdsMode, VariableOption, VariableRefresh,
        VariableSort)
    from grafana_foundation_sdk.models.prometheus import PromQueryFormat
except ImportError:
    sys.exit("generate.py needs grafana-foundation-sdk: run scripts/dashboards.sh (it installs the pinned version)")

DS = DataSourceRef(type_val="prometheus", uid="${DS_PROMETHEUS}")
SEL = 'job=~"$job",instance=~"$instance"'
MSEL = SEL + ',model=~"$model"'
RI = "$__rate_interval"
HEIGHT = 8


def query_variable(name, label, query):
    """A multi-value variable from a label_values() query, All selected by default."""
    return (dashboard.QueryVariable(name).label(label).datasource(DS)
            .query({"query": query, "refId": name})
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*")
            .current(VariableOption(text="All", value="$__all")))


def variables(with_model):
    out = [
        query_variable("job", "Job", "label_values(runway_exporter_build_info, job)"),
        query_variable("instance", "Instance", 'label_values(runway_exporter_build_info{job=~"$job"}, instance)'),
    ]
    if with_model:
        out.append(query_variable("model", "Model", 'label_values(runway_tasks_total{job=~"$job"}, model)'))
    return out


def panel(builder, title, description, targets, unit="short", width=12, instant=False):
    """Settings every panel shares, on an SDK panel builder: the datasource, the size
    (the SDK's Dashboard places panels left to right and starts a new line only once 24
    columns are full, so the widths on a line must add up to 24), and one Prometheus
    query per (expr, legend). Tables, and panels with instant=True, query only the end
    of the time range."""
    builder.title(title).description(description).datasource(DS).unit(unit).span(width).height(HEIGHT)
    for i, (expr, legend) in enumerate(targets):
        q = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + i)).datasource(DS)
        if isinstance(builder, table.Panel):
            q.instant().format(PromQueryFormat.TABLE)
        elif instant:
            q.instant()
        builder.with_target(q)
    return builder


def stacked():
    return timeseries.Panel().stacking(StackingConfig().mode(StackingMode.NORMAL).group("A")).fill_opacity(30)


class Board:
    """A dashboard builder that numbers its rows and panels: Grafana wants an id unique
    within the dashboard, and the SDK leaves it at 0."""

    def __init__(self, uid, title, description, with_model):
        self.builder = (
            dashboard.Dashboard(title).uid(uid).description(description).tags(["runway", "runway-exporter"])
            .version(1).editable().tooltip(DashboardCursorSync.CROSSHAIR)
            # "": the viewer's or the organization's time zone (the SDK's default is "browser").
            .time("now-6h", "now").refresh("30s").timezone("")
            .variables(variables(with_model))
        )
        self.next_id = 1

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def row(self, title):
        self.builder.with_row(dashboard.Row(title).id(self._id()))

    def add(self, p):
        self.builder.with_panel(p.id(self._id()))

    def to_json(self):
        """The dashboard as Grafana's export writes it: the SDK's JSON, plus the
        DS_PROMETHEUS input and the requirements that Grafana's import reads. They are
        keys of the export format, not of the dashboard schema, so the SDK has no
        builder for them."""
        out = json.loads(json.dumps(self.builder.build(), cls=JSONEncoder))
        out["__inputs"] = [{"name": "DS_PROMETHEUS", "label": "Prometheus", "description": "", "type": "datasource",
                            "pluginId": "prometheus", "pluginName": "Prometheus"}]
        out["__requires"] = [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "11.6.0"},
                             {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}]
        return out


def overview():
    b = Board("runway-overview", "Runway task outcomes",
              "Runway tasks by outcome, failure code, retry advice, duration and credits (runway-exporter).", True)
    b.row("Outcomes")
    b.add(panel(timeseries.Panel(), "Task outcomes per second", "Terminal outcomes, once per task, by status.",
                [(f"sum by (status) (rate(runway_tasks_total{{{MSEL}}}[{RI}]))", "{{status}}")], unit="reqps"))
    b.add(panel(stat.Panel(), "Failure ratio", "FAILED tasks among all terminal outcomes.",
                [(f'sum(rate(runway_tasks_total{{{MSEL},status="FAILED"}}[{RI}])) / sum(rate(runway_tasks_total{{{MSEL}}}[{RI}]))', "failed")],
                unit="percentunit", width=6))
    b.add(panel(stat.Panel(), "SAFETY failure ratio", "Tasks rejected by content moderation: credits lost, account at risk.",
                [(f'sum(rate(runway_task_failures_total{{{MSEL},category=~"safety_input|safety_output"}}[{RI}])) / sum(rate(runway_tasks_total{{{MSEL}}}[{RI}]))', "safety")],
                unit="percentunit", width=6))

    b.row("Failures")
    b.add(panel(timeseries.Panel(), "Failures by code", "FAILED tasks per second by Runway failure code.",
                [(f"sum by (failure_code) (rate(runway_task_failures_total{{{MSEL}}}[{RI}]))", "{{failure_code}}")], unit="reqps"))
    b.add(panel(timeseries.Panel(), "Failures by category", "Failure codes grouped by what they mean.",
                [(f"sum by (category) (rate(runway_task_failures_total{{{MSEL}}}[{RI}]))", "{{category}}")], unit="reqps"))
    b.add(panel(timeseries.Panel(), "Retryable vs never retry",
                "after_delay: retry later; never: fix the input; unlikely: may retry, seldom works.",
                [(f"sum by (retry) (rate(runway_task_failures_total{{{MSEL}}}[{RI}]))", "{{retry}}")], unit="reqps"))
    b.add(panel(timeseries.Panel(), "SAFETY: input vs output", "Moderation rejecting the inputs, or the generated output.",
                [(f'sum by (category) (rate(runway_task_failures_total{{{MSEL},category=~"safety_input|safety_output"}}[{RI}]))', "{{category}}")],
                unit="reqps"))
    b.add(panel(table.Panel(), "Top failure codes", "The ten failure codes seen most in the selected time range.",
                [(f"topk(10, sum by (failure_code, category, retry, credits) (increase(runway_task_failures_total{{{MSEL}}}[$__range])))", "")],
                width=24))
    # By instance too: each exporter's page lists only the failures it saw itself, and a
    # data link resolves per series (a panel link knows only $instance, which is ".*"
    # with All selected).
    b.add(panel(timeseries.Panel().data_links([
        dashboard.DashboardLink("Recent failures on ${__field.labels.instance}")
        .url("http://${__field.labels.instance}/").target_blank(True)]),
        "Recent failure rate by code",
        "FAILED tasks per second by failure code and exporter. Click a point for that exporter's page of its "
        "recent failures (its / address; http only: with --web.config.file TLS, open https://<instance>/).",
        [(f"sum by (instance, failure_code) (rate(runway_task_failures_total{{{MSEL}}}[{RI}]))", "{{failure_code}} ({{instance}})")],
        unit="reqps", width=24))

    b.row("Task timing")
    b.add(panel(timeseries.Panel(), "Task duration p50 / p90 / p99 by model",
                "From createdAt to the terminal record, by model, over all terminal statuses: quantiles of "
                "runway_task_duration_seconds.",
                [(f"histogram_quantile({q}, sum by (model, le) (rate(runway_task_duration_seconds_bucket{{{MSEL}}}[{RI}])))",
                  f"{{{{model}}}} p{p}") for q, p in [("0.5", "50"), ("0.9", "90"), ("0.99", "99")]],
                unit="s"))
    b.add(panel(timeseries.Panel(), "Queue time p90 by model",
                "From createdAt to the first RUNNING: time waiting for a concurrency slot (runway_task_queue_seconds).",
                [(f"histogram_quantile(0.9, sum by (model, le) (rate(runway_task_queue_seconds_bucket{{{MSEL}}}[{RI}])))", "{{model}}")],
                unit="s"))

    b.row("Credits")
    b.add(panel(stacked(), "Credits charged per hour by status",
                "Credits every terminal task was charged, stacked by status: a FAILED or CANCELLED "
                "task can be charged too. The task's reported cost, else the log's credits field, else an estimate.",
                [(f"sum by (status) (rate(runway_credits_charged_total{{{MSEL}}}[{RI}])) * 3600", "{{status}}")]))
    b.add(panel(stacked(), "Exact vs estimated credits per hour",
                "Charged credits as the tasks or the log reported them, and those estimated: from the "
                "pricing table (no cost in the record), or a deleted task's last estimatedCost. "
                "A large estimated share: keep config/pricing.toml current.",
                [(f"(sum(rate(runway_credits_charged_total{{{MSEL}}}[{RI}])) - (sum(rate(runway_credits_estimated_total{{{MSEL}}}[{RI}])) or vector(0))) * 3600", "exact (reported)"),
                 (f"sum(rate(runway_credits_estimated_total{{{MSEL}}}[{RI}])) * 3600", "estimated")]))
    b.add(panel(timeseries.Panel(), "Credits per hour: charged vs lost",
                "Credits charged to every terminal task, and the part charged to FAILED tasks: paid for, nothing produced.",
                [(f"sum(rate(runway_credits_charged_total{{{MSEL}}}[{RI}])) * 3600", "charged (all statuses)"),
                 (f"sum(rate(runway_credits_lost_total{{{MSEL}}}[{RI}])) * 3600", "lost on failures")]))
    b.add(panel(timeseries.Panel(), "USD per hour: charged vs lost", "At USD 0.01 per credit.",
                [(f"sum(rate(runway_credits_charged_total{{{MSEL}}}[{RI}])) * 3600 * 0.01", "charged (all statuses)"),
                 (f"sum(rate(runway_credits_lost_total{{{MSEL}}}[{RI}])) * 3600 * 0.01", "lost on failures")],
                unit="currencyUSD"))
    b.add(panel(table.Panel(), "Cost-rule mismatches by code",
                "FAILED tasks in the time range whose reported cost contradicts the failure-code table: "
                "credits=lost but charged 0, or credits=refunded but charged. Refunded codes that were "
                "charged are worth a word with Runway support; a lost code charged 0 means the table is out of date.",
                [(f"sort_desc(sum by (failure_code, credits) (increase(runway_task_cost_mismatches_total{{{SEL}}}[$__range])))", "")],
                width=24))

    b.row("Organization (Runway's accounting; API source only)")
    b.add(panel(stat.Panel(), "Organization credit balance",
                "From GET /v1/organization. Every exporter with the API source reports the same organization: max, not sum.",
                [(f"max(runway_organization_credit_balance{{{SEL}}})", "balance")], width=6))
    b.add(panel(stat.Panel(), "Spend vs monthly purchase cap",
                "Credits the exporters counted over the last 30 days (all instances: select them all), "
                "beside the tier's maxMonthlyCreditSpend: the most credits that can be purchased in a 30-day window. "
                "It caps auto-billing, not spending: credits already bought can still be spent, but spending near the "
                "cap means the balance cannot be refilled past it. Needs 30 days of retention (Prometheus keeps 15 by default).",
                [(f"sum(increase(runway_credits_charged_total{{{SEL}}}[30d]))", "charged, last 30 days"),
                 (f"max(runway_organization_max_monthly_credit_spend{{{SEL}}})", "purchase cap, 30 days")],
                width=9, instant=True))
    b.add(panel(gauge.Panel().min(0).max(1).thresholds(
        dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps([
            Threshold(value=None, color="green"), Threshold(value=0.8, color="orange"), Threshold(value=0.95, color="red")])),
        "Monthly purchase cap used",
        "Credits counted over the last 30 days as a share of maxMonthlyCreditSpend, the most credits that can be "
        "purchased in a 30-day window (a cap on auto-billing, not on spending); no data when it is null (no limit).",
        [(f"sum(increase(runway_credits_charged_total{{{SEL}}}[30d])) / max(runway_organization_max_monthly_credit_spend{{{SEL}}})", "of the purchase cap")],
        unit="percentunit", width=9, instant=True))
    b.add(panel(timeseries.Panel(), "Runway's daily usage vs counted credits today (UTC)",
                "Both since 00:00 UTC, resetting at midnight UTC: Runway's own accounting (max across instances), and "
                "every counter's growth since its value at the last midnight (a 1d subquery step falls on 00:00 UTC), summed "
                "over instances: select them all. Tasks still being polled are counted when they end. "
                "The alert RunwayCreditsUnaccounted compares whole days.",
                [(f'sum(max by (model) (runway_organization_daily_credits_used{{{SEL},model=~"$model"}}))', "Runway's usage"),
                 (f"sum((runway_credits_charged_total{{{MSEL}}} - last_over_time(runway_credits_charged_total{{{MSEL}}}[1d:1d]) >= 0)"
                  f" or runway_credits_charged_total{{{MSEL}}})", "counted by the exporters"),
                 (f"sum(runway_api_credits_in_flight{{{SEL}}})", "in flight (estimated)")]))
    b.add(panel(timeseries.Panel(), "Generations in 24 hours vs limit",
                "From GET /v1/organization: generations in a rolling 24 hours (not since midnight) beside the tier's "
                "limit; no limit line for a model whose limit is null (no limit).",
                [(f'max by (model) (runway_organization_daily_generations{{{SEL},model=~"$model"}})', "{{model}} today"),
                 (f'max by (model) (runway_organization_max_daily_generations{{{SEL},model=~"$model"}})', "{{model}} limit")]))
    proxy_row(b)
    return b


def proxy_row(b):
    """The application's own traffic to the API, as the proxy saw it (docs/proxy.md)."""
    b.row("Application's API traffic (proxy only)")
    b.add(panel(stacked(), "Tasks created by model and endpoint",
                "Tasks created through the proxy per second (a POST answered 2xx with a task id), by model "
                "(the request's, or the model router's choice) and create endpoint: runway_tasks_created_total.",
                [(f'sum by (model, endpoint) (rate(runway_tasks_created_total{{{MSEL}}}[{RI}]))', "{{model}} {{endpoint}}")],
                unit="reqps"))
    b.add(panel(stacked(), "API answers by code",
                "Every answer the application got through the proxy, per second, by HTTP status "
                "(runway_api_requests_total): 2xx, and the errors apart below.",
                [(f"sum by (code) (rate(runway_api_requests_total{{{SEL}}}[{RI}]))", "{{code}}")], unit="reqps"))
    b.add(panel(timeseries.Panel(), "Client errors (4xx) by code and endpoint",
                "400, 401, 404, 405: never retry, fix the request or the key. 429: the organization's daily task "
                "quota (or rate limit) is reached; alert RunwayDailyQuotaReached.",
                [(f'sum by (code, endpoint) (rate(runway_api_requests_total{{{SEL},code=~"4.."}}[{RI}]))', "{{code}} {{endpoint}}")],
                unit="reqps"))
    b.add(panel(timeseries.Panel(), "Server errors (5xx) by code and endpoint",
                "502, 503, 504: retry with jitter (the SDKs do, twice). A 502 or 504 may be the proxy's own: "
                "Runway unreachable, or no answer within proxy.response_timeout.",
                [(f'sum by (code, endpoint) (rate(runway_api_requests_total{{{SEL},code=~"5.."}}[{RI}]))', "{{code}} {{endpoint}}")],
                unit="reqps"))
    b.add(panel(timeseries.Panel(), "Upstream latency p50 / p99 by endpoint",
                "From the request's start to the upstream's answer headers, by endpoint: quantiles of "
                "runway_api_request_duration_seconds (not the body's transfer).",
                [(f"histogram_quantile({q}, sum by (endpoint, le) (rate(runway_api_request_duration_seconds_bucket{{{SEL}}}[{RI}])))",
                  f"{{{{endpoint}}}} p{p}") for q, p in [("0.5", "50"), ("0.99", "99")]],
                unit="s"))
    b.add(panel(timeseries.Panel(), "Tasks created, not yet seen to end",
                "Tasks created through the proxy whose end no source has seen yet (runway_proxy_tasks_open): "
                "the application's polls, a log, a DELETE, or the API source following them with a key. "
                "Without a key, a line that only grows is tasks the application created and never waited for.",
                [(f"sum by (instance) (runway_proxy_tasks_open{{{SEL}}})", "{{instance}}")]))
    b.add(panel(stat.Panel(), "HTTP error ratio",
                "Answers with a 4xx or 5xx status among all the proxy passed back.",
                [(f'(sum(rate(runway_api_requests_total{{{SEL},code=~"4..|5.."}}[{RI}])) or vector(0)) / sum(rate(runway_api_requests_total{{{SEL}}}[{RI}]))', "errors")],
                unit="percentunit"))


def health():
    b = Board("runway-exporter-health", "runway-exporter health",
              "How runway-exporter itself is doing: reading, parsing, state, sources.", False)
    b.row("Reading")
    b.add(panel(timeseries.Panel(), "Lines per second by result", "Every line ends as counted, duplicate, non_terminal or rejected.",
                [(f"sum by (source, result) (rate(runway_exporter_records_total{{{SEL}}}[{RI}]))", "{{source}} {{result}}")], unit="reqps"))
    b.add(panel(timeseries.Panel(), "Parse errors by reason", "Rejected lines by reason; see the dead-letter file for the lines.",
                [(f"sum by (reason) (rate(runway_exporter_parse_errors_total{{{SEL}}}[{RI}]))", "{{reason}}")], unit="reqps"))
    b.add(panel(timeseries.Panel(), "Label overflow", "Records folded into 'other' by the cardinality caps.",
                [(f"sum by (label) (rate(runway_exporter_label_overflow_total{{{SEL}}}[{RI}]))", "{{label}}")], unit="reqps"))
    b.add(panel(timeseries.Panel(), "Rotations and truncations", "Files replaced at their path, and files found shorter than read.",
                [(f"sum by (source) (increase(runway_exporter_file_rotations_total{{{SEL}}}[{RI}]))", "rotations {{source}}"),
                 (f"sum by (source) (increase(runway_exporter_file_truncations_total{{{SEL}}}[{RI}]))", "truncations {{source}}")]))
    b.add(panel(timeseries.Panel(), "Untimed tasks",
                "Tasks whose times could not be trusted, by measure and reason: "
                "the duration and queue-time panels leave them out.",
                [(f"sum by (measure, reason) (rate(runway_exporter_untimed_tasks_total{{{SEL}}}[{RI}]))", "{{measure}} {{reason}}")],
                unit="reqps", width=24))
    b.row("State and sources")
    b.add(panel(stat.Panel(), "Commit age", "Seconds since the last commit: /metrics shows that commit.",
                [(f"max by (instance) (time() - runway_exporter_last_commit_timestamp_seconds{{{SEL}}})", "{{instance}}")],
                unit="s", width=8))
    b.add(panel(stat.Panel(), "Sources up", "1 while a source runs and can read its input.",
                [(f"min by (source) (runway_exporter_source_up{{{SEL}}})", "{{source}}")], width=8))
    b.add(panel(stat.Panel(), "Commit errors", "Failed commits of the state file in the time range.",
                [(f"sum(increase(runway_exporter_commit_errors_total{{{SEL}}}[$__range]))", "errors")], width=8))
    b.add(panel(timeseries.Panel(), "Runway API requests by code", "Requests to the Runway API (with the API source).",
                [(f"sum by (endpoint, code) (rate(runway_exporter_api_requests_total{{{SEL}}}[{RI}]))", "{{endpoint}} {{code}}")],
                unit="reqps"))
    b.add(panel(timeseries.Panel(), "Tasks polled", "Tasks from the task list polled until they end.",
                [(f"sum by (instance) (runway_api_tasks_tracked{{{SEL}}})", "{{instance}}")]))
    b.row("Proxy")
    b.add(panel(timeseries.Panel(), "Proxy observations dropped",
                "Answers passed back to the application but not counted: dropped because the observation queue was "
                "full (counting fell behind, say a slow disk), or JSON answers over 64 KiB not read. "
                "The requests themselves went through.",
                [(f"sum by (instance) (increase(runway_exporter_proxy_observations_dropped_total{{{SEL}}}[{RI}]))", "dropped {{instance}}"),
                 (f"sum by (instance) (increase(runway_exporter_proxy_answers_unobserved_total{{{SEL}}}[{RI}]))", "unobserved {{instance}}")]))
    b.add(panel(timeseries.Panel(), "Requests the proxy refused",
                "Requests answered by the proxy itself, never forwarded, by reason (runway_exporter_proxy_refused_total): "
                "CONNECT, a target naming a host, a path outside /v1/, dot segments, bytes that are not HTTP/1.1. "
                "A steady stream is a misconfigured client or someone probing the port.",
                [(f"sum by (reason) (increase(runway_exporter_proxy_refused_total{{{SEL}}}[{RI}]))", "{{reason}}")]))
    b.add(panel(timeseries.Panel(), "Created tasks at risk",
                "Create answers passed on without their task in the journal (a failed write or a full journal: "
                "such a task is lost if the exporter is killed before its next commit), and open tasks dropped "
                "to make room for newer ones (16,384 held).",
                [(f"sum by (instance) (increase(runway_exporter_proxy_journal_failures_total{{{SEL}}}[{RI}]))", "unjournaled {{instance}}"),
                 (f"sum by (instance) (increase(runway_exporter_proxy_tasks_open_evicted_total{{{SEL}}}[{RI}]))", "evicted {{instance}}")],
                width=24))
    return b


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    for name, board in [("runway-overview.json", overview()), ("runway-exporter-health.json", health())]:
        with open(os.path.join(out, name), "w") as f:
            json.dump(board.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()
