"""CountingLoss: the training loss counts the top-1 hits of the batches Model trains on."""

from __future__ import annotations

import math

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
import pytest
from mindspore import nn
from mindspore.train import Model

from ms_resnet.train_accuracy import CountingLoss, accuracy_of


def test_counts_are_the_hits_of_every_batch_trained_on_and_take_resets_them() -> None:
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((44, 6)).astype(np.float32)
    y = rng.integers(0, 3, 44).astype(np.int32)
    # 44 images in batches of 8: the short last batch counts its 4 images, not 8.
    data = ds.NumpySlicesDataset((x, y), column_names=["image", "label"], shuffle=False).batch(8)
    net = nn.Dense(6, 3)
    loss = CountingLoss(nn.CrossEntropyLoss())
    # lr 0: the weights the hits are counted with are the ones we check them with.
    model = Model(net, loss_fn=loss, optimizer=nn.SGD(net.trainable_params(), 0.0))
    expected = int((net(ms.Tensor(x)).asnumpy().argmax(1) == y).sum())
    model.train(1, data, dataset_sink_mode=False)
    # Counted once per step, although TrainOneStepCell runs the loss for both value and grad.
    assert loss.take() == (expected, 44)
    assert loss.take() == (0, 0)
    model.train(1, data, dataset_sink_mode=False)
    assert loss.take() == (expected, 44)
    # The counters live in the training network, so last.ckpt saves them.
    names = {p.name for p in model.train_network.get_parameters()}
    assert {"train_accuracy.correct", "train_accuracy.seen"} <= names
    assert accuracy_of((expected, 44)) == expected / 44
    assert math.isnan(accuracy_of((0, 0)))


def test_a_last_ckpt_without_counters_still_loads_and_says_so(tmp_path) -> None:
    """A last.ckpt written before the counters existed resumes; `missing` names them, so the
    resumed epoch records NaN instead of a partial count."""
    from ms_resnet.checkpoint import load_weights
    from ms_resnet.errors import CheckpointError
    from ms_resnet.train_accuracy import COUNTER_NAMES

    net = nn.Dense(6, 3)
    old = tmp_path / "old.ckpt"
    ms.save_checkpoint(net, str(old))
    with_counters = nn.WithLossCell(net, CountingLoss(nn.CrossEntropyLoss()))
    assert load_weights(with_counters, old, optional=COUNTER_NAMES)["missing"] == list(
        COUNTER_NAMES)
    with pytest.raises(CheckpointError, match="no parameter 'train_accuracy.correct'"):
        load_weights(with_counters, old)  # not optional: an error, as for any other Parameter
