"""The PromQL tokenizer of the dashboard check: names vs functions, labels, keywords, numbers, variables."""

from __future__ import annotations

import pytest

from tests.metrics.promql_names import metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("rbee_queen_queue_depth", {"rbee_queen_queue_depth"}),
        ("sum by (model) (rate(rbee_queen_requests_total[$__rate_interval]))", {"rbee_queen_requests_total"}),
        (
            "histogram_quantile(0.95, sum by (le, model) (rate(rbee_queen_time_to_first_token_seconds_bucket[5m])))",
            {"rbee_queen_time_to_first_token_seconds_bucket"},
        ),
        ('sum by (status) (rate(rbee_queen_requests_total{status!~"2..", model="sum(x)"}[1m]))',
         {"rbee_queen_requests_total"}),
        ("a_sum / on (model) group_left (x) b_count * 1e3 > bool 0.5", {"a_sum", "b_count"}),
        ("max by (instance) (up{job=~\"rbee.*\"}) unless offset_x offset 5m", {"up", "offset_x"}),
        ("sum without (instance) (m1) or ignoring (gpu) m2 and m3 unless vector(1)", {"m1", "m2", "m3"}),
        ("increase(rbee_hive_worker_restarts_total[${__range}])", {"rbee_hive_worker_restarts_total"}),
        ("topk(5, x:recorded:rate5m)", {"x:recorded:rate5m"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
