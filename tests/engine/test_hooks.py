"""DatasetSummaryHook sums the data issues carried by batches."""
import logging
from types import SimpleNamespace

from sa2va.engine.hooks import DatasetSummaryHook


def test_data_issues_are_summed_from_batches(caplog):
    hook = DatasetSummaryHook()
    for issues in ({"refcoco: skipped: missing_image": 1}, {}, {"refcoco: skipped: missing_image": 2,
                                                             "osprey: truncated: max_length": 1}):
        hook.before_train_iter(None, 0, {"data": {"data_issues": issues}, "data_samples": None})
    logger = logging.getLogger("test_hooks")
    runner = SimpleNamespace(model=SimpleNamespace(num_skipped_mismatch=1), logger=logger)
    with caplog.at_level(logging.INFO, logger="test_hooks"):
        hook.after_train(runner)
    text = caplog.text
    assert "refcoco: skipped: missing_image: 3" in text and "osprey: truncated: max_length: 1" in text
    assert "[SEG]/mask count mismatch: skipped: 1" in text
