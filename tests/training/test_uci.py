from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from streams.core.events import ShopEvent
from training import uci

from .conftest import WORKER_POLICY

HEADER = (
    "Administrative,Administrative_Duration,Informational,Informational_Duration,ProductRelated,"
    "ProductRelated_Duration,BounceRates,ExitRates,PageValues,SpecialDay,Month,OperatingSystems,"
    "Browser,Region,TrafficType,VisitorType,Weekend,Revenue"
)
ROWS = (
    "2,60,1,30,3,90,0.01,0.02,12.5,0,Nov,2,2,1,2,Returning_Visitor,NO,YES",
    "0,0,0,0,1,0,0.2,0.2,0,0,Feb,1,1,1,1,Returning_Visitor,NO,NO",
    "0,0,0,0,0,0,0.2,0.2,0,0,Mar,1,1,1,1,New_Visitor,YES,NO",
)
REAL_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / uci.CSV_NAME


@pytest.fixture
def few_rows(tmp_path: Path) -> Path:
    path = tmp_path / uci.CSV_NAME
    path.write_text("\n".join((HEADER, *ROWS)) + "\n", encoding="utf-8")
    return path


def test_rows_become_page_views_in_order_with_even_durations(few_rows: Path) -> None:
    sessions = uci.load_sessions(few_rows)
    assert [s.revenue for s in sessions] == [True, False, False]
    first = sessions[0]
    assert [e["page"] for e in first.events] == ["administrative"] * 2 + ["informational"] + [
        "product"
    ] * 3
    assert [e["duration_s"] for e in first.events] == [30.0, 30.0, 30.0, 30.0, 30.0, 30.0]
    assert first.analytics == {"PageValues": 12.5, "BounceRates": 0.01, "ExitRates": 0.02}
    for s in sessions:
        for doc in s.events:
            assert ShopEvent.model_validate(doc).check_type_fields() is None
        stamps = [e["ts"] for e in s.events]
        assert stamps == sorted(stamps)
    assert [e["page"] for e in sessions[2].events] == ["unknown"]  # no page views at all


def test_texts_come_from_the_worker_renderer(few_rows: Path) -> None:
    first = uci.load_sessions(few_rows)[0]
    text = uci.session_text(first, WORKER_POLICY, with_analytics=False)
    assert text == (
        "view: administrative page 30s ×2 | view: informational page 30s | "
        "view: product page 30s ×3"
    )
    with_ga = uci.session_text(first, WORKER_POLICY, with_analytics=True)
    assert with_ga.startswith(text) and "page value 12.5" in with_ga


@pytest.mark.skipif(not REAL_CSV.is_file(), reason="UCI CSV not available")
def test_comparable_split_is_the_readme_split() -> None:
    sessions = uci.load_sessions(REAL_CSV)
    y = np.array([s.revenue for s in sessions], dtype=int)
    train, test = uci.comparable_split(y.astype(bool))
    assert (len(train), len(test)) == (8631, 3699)
    x = np.arange(len(y)).reshape(-1, 1)
    x_train, x_test, _, _ = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    assert set(test) == set(x_test[:, 0]) and set(train) == set(x_train[:, 0])
