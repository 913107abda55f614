"""Transfer learning (lepton_nn/transfer.py, `lepton-nn transfer`): the frozen part stays bit-identical,
fine-tuning moves it, the label shares are what they say, and a short real run learns."""
import numpy as np
import pytest

import lepton_nn
from lepton_nn import cli, transfer


def random_images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 5, n)


@pytest.fixture
def pretrained(tmp_path):
    """A CNN fitted for one epoch on random images (the weights only need to exist), saved."""
    lepton_nn.seed(0)
    x, y = random_images(64)
    model = transfer.build_cnn(5)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "pretrained.lnn"
    model.save(path)
    return path, model


def test_digits_subset_keeps_those_digits_and_renumbers_them():
    x = np.arange(10)[:, None] * np.ones((10, 3))
    y = np.array([5, 0, 9, 4, 7, 5, 1, 8, 6, 2])
    xs, ys = transfer.digits_subset(x, y, transfer.TRANSFER_DIGITS)
    np.testing.assert_array_equal(ys, [0, 4, 2, 0, 3, 1])
    np.testing.assert_array_equal(xs[:, 0], [0, 2, 4, 5, 7, 8])


def test_label_fraction_takes_the_same_share_of_every_class():
    y = np.repeat(np.arange(5), [1000, 800, 600, 400, 200])
    picked = transfer.label_fraction(y, 0.1, seed=3)
    np.testing.assert_array_equal(np.bincount(y[picked]), [100, 80, 60, 40, 20])
    assert len(np.unique(picked)) == len(picked)
    np.testing.assert_array_equal(np.bincount(y[transfer.label_fraction(y, 0.001, seed=3)]), [1, 1, 1, 1, 1])
    assert not np.array_equal(picked, transfer.label_fraction(y, 0.1, seed=4))


def test_new_head_on_frozen_features_leaves_them_bit_identical(pretrained):
    path, original = pretrained
    model, features = transfer.with_new_head(path, 5)
    assert [layer.name for layer in features.layers] == ["conv", "pool", "flatten"]
    for a, b in zip(features.get_weights(), original.get_weights()[:2]):
        np.testing.assert_array_equal(a, b)  # the pretrained features, loaded
    transfer._compile(model, 1e-3)
    assert sum(w.size for w in model.non_trainable_weights) == 32 * 9 + 32
    before, head = features.get_weights(), model.get_layer("new_dense").get_weights()
    x, y = random_images(96, seed=1)
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    for a, b in zip(before, features.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(head[0], model.get_layer("new_dense").get_weights()[0])


def test_fine_tuning_moves_the_features_after_compile(pretrained):
    path, _ = pretrained
    model, features = transfer.with_new_head(path, 5)
    transfer._compile(model, 1e-3)
    x, y = random_images(64, seed=2)
    before = features.get_weights()
    features.trainable = True
    transfer._compile(model, 1e-4)  # the change takes effect here, as in Keras
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert not np.array_equal(before[0], features.get_weights()[0])


def test_a_short_transfer_run_on_mnist_learns(mnist_dir, tmp_path):
    """Few images, few epochs: each phase must still beat chance (20 %) by far on the 5–9 test digits."""
    from lepton_nn.data import mnist
    (x, y), (xt, yt) = mnist.load_data(mnist_dir)
    x, xt = transfer.preprocess(x[:6000]), transfer.preprocess(xt[:1000])
    x_a, y_a = transfer.digits_subset(x, y[:6000], transfer.PRETRAIN_DIGITS)
    x_b, y_b = transfer.digits_subset(x, y[:6000], transfer.TRANSFER_DIGITS)
    xt_b, yt_b = transfer.digits_subset(xt, yt[:1000], transfer.TRANSFER_DIGITS)
    budget = transfer.Budget(pretrain_epochs=1, head_epochs=1, finetune_epochs=1)
    transfer.pretrain(x_a, y_a, tmp_path / "a.lnn", budget)
    result = transfer.transfer_runs(tmp_path / "a.lnn", x_b, y_b, xt_b, yt_b, 0.5, budget)
    assert result.labels == pytest.approx(len(y_b) / 2, abs=5)
    assert set(result.accuracy) == set(transfer.PHASES) == set(result.seconds)
    for phase, accuracy in result.accuracy.items():
        assert accuracy > 0.8, (phase, accuracy)
    table = transfer.format_results([result], 0.9, 1.0)
    assert "50 %" in table and "frozen" in table


@pytest.mark.parametrize("argv, message", [
    (["transfer", "--labels", "0"], "percentage in (0, 100]"),
    (["transfer", "--labels", "101"], "percentage in (0, 100]"),
    (["transfer", "--head-epochs", "0"], "head-epochs"),
    (["transfer", "--save", "/no/such/dir/m.lnn"], "save"),
])
def test_cli_refuses_bad_arguments_before_any_work(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_run_refuses_a_bad_fraction_before_loading_data():
    with pytest.raises(ValueError, match=r"fraction of labels must be in \(0, 1\]"):
        transfer.run(data="/no/such/dir", fractions=[1.5])
