#!/usr/bin/env python3
"""Writes the Grafana dashboards (runway-overview.json, runway-exporter-health.json).

The JSON files are committed and importable as they are; edit this script and run it
(python3 dashboards/generate.py) to change them, so both dashboards stay consistent.
A test evaluates every panel's query against a real Prometheus.
"""
import json
import os

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
SEL = 'job=~"$job",instance=~"$instance"'
MSEL = SEL + ',model=~"$model"'
RI = "$__rate_interval"


def variables(with_model):
    def query_var(name, label, query, include_all=True):
        return {
            "name": name, "label": label, "type": "query", "datasource": DS,
            "query": {"query": query, "refId": name}, "definition": query,
            "refresh": 2, "includeAll": include_all, "multi": True,
            "allValue": ".*", "current": {"text": "All", "value": "$__all"}, "sort": 1,
        }
    out = [
        query_var("job", "Job", "label_values(runway_exporter_build_info, job)"),
        query_var("instance", "Instance", 'label_values(runway_exporter_build_info{job=~"$job"}, instance)'),
    ]
    if with_model:
        out.append(query_var("model", "Model", 'label_values(runway_tasks_total{job=~"$job"}, model)'))
    return out


class Board:
    def __init__(self):
        self.panels = []
        self.y = 0
        self.x = 0
        self.next_id = 1

    def row(self, title):
        self.newline()
        self.panels.append({"type": "row", "title": title, "id": self.next_id, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.next_id += 1
        self.y += 1

    def newline(self):
        if self.x:
            self.x = 0
            self.y += 8

    def panel(self, kind, title, targets, unit="short", width=12, description="", instant=False, stack=False,
              defaults=None, **extra):
        """A panel; tables, and panels with instant=True, query only the end of the time range."""
        if self.x + width > 24:
            self.newline()
        if kind == "table":
            query_type = {"instant": True, "format": "table"}
        elif instant:
            query_type = {"instant": True, "range": False}
        else:
            query_type = {}
        field_defaults = {"unit": unit, **(defaults or {})}
        if stack:
            field_defaults["custom"] = {"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 30}
        p = {
            "type": kind, "title": title, "description": description, "id": self.next_id, "datasource": DS,
            "gridPos": {"h": 8, "w": width, "x": self.x, "y": self.y},
            "targets": [
                {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i), **query_type}
                for i, (expr, legend) in enumerate(targets)
            ],
            "fieldConfig": {"defaults": field_defaults, "overrides": []},
            "options": {},
        }
        p.update(extra)
        self.panels.append(p)
        self.next_id += 1
        self.x += width
        if self.x >= 24:
            self.newline()


def dashboard(uid, title, description, board, with_model):
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "description": "", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
                       {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
        "uid": uid, "title": title, "description": description, "tags": ["runway", "runway-exporter"],
        "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
        "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "timezone": "",
        "templating": {"list": variables(with_model)},
        "annotations": {"list": []}, "links": [],
        "panels": board.panels,
    }


def overview():
    b = Board()
    b.row("Outcomes")
    b.panel("timeseries", "Task outcomes per second", [(f"sum by (status) (rate(runway_tasks_total{{{MSEL}}}[{RI}]))", "{{status}}")],
            unit="reqps", description="Terminal outcomes, once per task, by status.")
    b.panel("stat", "Failure ratio", [(f'sum(rate(runway_tasks_total{{{MSEL},status="FAILED"}}[{RI}])) / sum(rate(runway_tasks_total{{{MSEL}}}[{RI}]))', "failed")],
            unit="percentunit", width=6, description="FAILED tasks among all terminal outcomes.")
    b.panel("stat", "SAFETY failure ratio", [(f'sum(rate(runway_task_failures_total{{{MSEL},category=~"safety_input|safety_output"}}[{RI}])) / sum(rate(runway_tasks_total{{{MSEL}}}[{RI}]))', "safety")],
            unit="percentunit", width=6, description="Tasks rejected by content moderation: credits lost, account at risk.")
    b.row("Failures")
    b.panel("timeseries", "Failures by code", [(f"sum by (failure_code) (rate(runway_task_failures_total{{{MSEL}}}[{RI}]))", "{{failure_code}}")],
            unit="reqps", description="FAILED tasks per second by Runway failure code.")
    b.panel("timeseries", "Failures by category", [(f"sum by (category) (rate(runway_task_failures_total{{{MSEL}}}[{RI}]))", "{{category}}")],
            unit="reqps", description="Failure codes grouped by what they mean.")
    b.panel("timeseries", "Retryable vs never retry", [(f"sum by (retry) (rate(runway_task_failures_total{{{MSEL}}}[{RI}]))", "{{retry}}")],
            unit="reqps", description="after_delay: retry later; never: fix the input; unlikely: may retry, seldom works.")
    b.panel("timeseries", "SAFETY: input vs output", [(f'sum by (category) (rate(runway_task_failures_total{{{MSEL},category=~"safety_input|safety_output"}}[{RI}]))', "{{category}}")],
            unit="reqps", description="Moderation rejecting the inputs, or the generated output.")
    b.panel("table", "Top failure codes", [(f"topk(10, sum by (failure_code, category, retry, credits) (increase(runway_task_failures_total{{{MSEL}}}[$__range])))", "")],
            width=24, description="The ten failure codes seen most in the selected time range.")
    b.row("Credits")
    b.panel("timeseries", "Credits charged per hour by status", [
        (f"sum by (status) (rate(runway_credits_charged_total{{{MSEL}}}[{RI}])) * 3600", "{{status}}"),
    ], stack=True, description="Credits every terminal task was charged, stacked by status: a FAILED or CANCELLED "
                               "task can be charged too. The task's reported cost, else the log's credits field, else an estimate.")
    b.panel("timeseries", "Exact vs estimated credits per hour", [
        (f"(sum(rate(runway_credits_charged_total{{{MSEL}}}[{RI}])) - (sum(rate(runway_credits_estimated_total{{{MSEL}}}[{RI}])) or vector(0))) * 3600", "exact (reported)"),
        (f"sum(rate(runway_credits_estimated_total{{{MSEL}}}[{RI}])) * 3600", "estimated (pricing table)"),
    ], stack=True, description="Charged credits as the tasks or the log reported them, and those estimated from the "
                               "pricing table (no cost in the record). A large estimated share: keep config/pricing.toml current.")
    b.panel("timeseries", "Credits per hour: charged vs lost", [
        (f"sum(rate(runway_credits_charged_total{{{MSEL}}}[{RI}])) * 3600", "charged (all statuses)"),
        (f"sum(rate(runway_credits_lost_total{{{MSEL}}}[{RI}])) * 3600", "lost on failures"),
    ], description="Credits charged to every terminal task, and the part charged to FAILED tasks: paid for, nothing produced.")
    b.panel("timeseries", "USD per hour: charged vs lost", [
        (f"sum(rate(runway_credits_charged_total{{{MSEL}}}[{RI}])) * 3600 * 0.01", "charged (all statuses)"),
        (f"sum(rate(runway_credits_lost_total{{{MSEL}}}[{RI}])) * 3600 * 0.01", "lost on failures"),
    ], unit="currencyUSD", description="At USD 0.01 per credit.")
    b.panel("table", "Cost-rule mismatches by code", [
        (f"sort_desc(sum by (failure_code, credits) (increase(runway_task_cost_mismatches_total{{{SEL}}}[$__range])))", ""),
    ], width=24, description="FAILED tasks in the time range whose reported cost contradicts the failure-code table: "
                             "credits=lost but charged 0, or credits=refunded but charged. Refunded codes that were "
                             "charged are worth a word with Runway support; a lost code charged 0 means the table is out of date.")
    b.row("Organization (Runway's accounting; API source only)")
    b.panel("stat", "Organization credit balance", [(f"max(runway_organization_credit_balance{{{SEL}}})", "balance")],
            width=6, description="From GET /v1/organization. Every exporter with the API source reports the same organization: max, not sum.")
    b.panel("stat", "Spend vs monthly cap", [
        (f"sum(increase(runway_credits_charged_total{{{SEL}}}[30d]))", "charged, last 30 days"),
        (f"max(runway_organization_max_monthly_credit_spend{{{SEL}}})", "monthly cap"),
    ], width=9, instant=True, description="Credits the exporters counted over the last 30 days (all instances: select them all), "
                                          "beside the tier's maxMonthlyCreditSpend. Needs 30 days of retention (Prometheus keeps 15 by default).")
    b.panel("gauge", "Monthly cap used", [
        (f"sum(increase(runway_credits_charged_total{{{SEL}}}[30d])) / max(runway_organization_max_monthly_credit_spend{{{SEL}}})", "of the cap"),
    ], unit="percentunit", width=9, instant=True,
        defaults={"min": 0, "max": 1, "thresholds": {"mode": "absolute", "steps": [
            {"color": "green", "value": None}, {"color": "orange", "value": 0.8}, {"color": "red", "value": 0.95}]}},
        description="Credits counted over the last 30 days as a share of the monthly cap; no data for an unlimited tier.")
    b.panel("timeseries", "Runway's daily usage vs counted credits today (UTC)", [
        (f'sum(max by (model) (runway_organization_daily_credits_used{{{SEL},model=~"$model"}}))', "Runway's usage"),
        (f"sum((runway_credits_charged_total{{{MSEL}}} - last_over_time(runway_credits_charged_total{{{MSEL}}}[1d:1d]) >= 0)"
         f" or runway_credits_charged_total{{{MSEL}}})", "counted by the exporters"),
        (f"sum(runway_api_credits_in_flight{{{SEL}}})", "in flight (estimated)"),
    ], description="Both since 00:00 UTC, resetting at midnight UTC: Runway's own accounting (max across instances), and "
                   "every counter's growth since its value at the last midnight (a 1d subquery step falls on 00:00 UTC), summed "
                   "over instances: select them all. Tasks still being polled are counted when they end. "
                   "The alert RunwayCreditsUnaccounted compares whole days.")
    b.panel("timeseries", "Daily generations vs limit", [
        (f'max by (model) (runway_organization_daily_generations{{{SEL},model=~"$model"}})', "{{model}} today"),
        (f'max by (model) (runway_organization_max_daily_generations{{{SEL},model=~"$model"}})', "{{model}} limit"),
    ], description="From GET /v1/organization; no limit line for a model without a daily limit.")
    return dashboard("runway-overview", "Runway task outcomes", "Runway tasks by outcome, failure code, retry advice and credits (runway-exporter).", b, True)


def health():
    b = Board()
    b.row("Reading")
    b.panel("timeseries", "Lines per second by result", [(f"sum by (source, result) (rate(runway_exporter_records_total{{{SEL}}}[{RI}]))", "{{source}} {{result}}")],
            unit="reqps", description="Every line ends as counted, duplicate, non_terminal or rejected.")
    b.panel("timeseries", "Parse errors by reason", [(f"sum by (reason) (rate(runway_exporter_parse_errors_total{{{SEL}}}[{RI}]))", "{{reason}}")],
            unit="reqps", description="Rejected lines by reason; see the dead-letter file for the lines.")
    b.panel("timeseries", "Label overflow", [(f"sum by (label) (rate(runway_exporter_label_overflow_total{{{SEL}}}[{RI}]))", "{{label}}")],
            unit="reqps", description="Records folded into 'other' by the cardinality caps.")
    b.panel("timeseries", "Rotations and truncations", [
        (f"sum by (source) (increase(runway_exporter_file_rotations_total{{{SEL}}}[{RI}]))", "rotations {{source}}"),
        (f"sum by (source) (increase(runway_exporter_file_truncations_total{{{SEL}}}[{RI}]))", "truncations {{source}}"),
    ], description="Files replaced at their path, and files found shorter than read.")
    b.row("State and sources")
    b.panel("stat", "Commit age", [(f"max by (instance) (time() - runway_exporter_last_commit_timestamp_seconds{{{SEL}}})", "{{instance}}")],
            unit="s", width=8, description="Seconds since the last commit: /metrics shows that commit.")
    b.panel("stat", "Sources up", [(f"min by (source) (runway_exporter_source_up{{{SEL}}})", "{{source}}")],
            width=8, description="1 while a source runs and can read its input.")
    b.panel("stat", "Commit errors", [(f"sum(increase(runway_exporter_commit_errors_total{{{SEL}}}[$__range]))", "errors")],
            width=8, description="Failed commits of the state file in the time range.")
    b.panel("timeseries", "Runway API requests by code", [(f"sum by (endpoint, code) (rate(runway_exporter_api_requests_total{{{SEL}}}[{RI}]))", "{{endpoint}} {{code}}")],
            unit="reqps", description="Requests to the Runway API (with the API source).")
    b.panel("timeseries", "Tasks polled", [(f"sum by (instance) (runway_api_tasks_tracked{{{SEL}}})", "{{instance}}")],
            description="Tasks from the task list polled until they end.")
    return dashboard("runway-exporter-health", "runway-exporter health", "How runway-exporter itself is doing: reading, parsing, state, sources.", b, False)


here = os.path.dirname(os.path.abspath(__file__))
for name, board in [("runway-overview.json", overview()), ("runway-exporter-health.json", health())]:
    with open(os.path.join(here, name), "w") as f:
        json.dump(board, f, indent=2, sort_keys=True)
        f.write("\n")
