"""The train stage's settings and bookkeeping: gradient clipping as the Trainer's, and the
saved adapter's val loss (training on the tiny Llama: tests/integration/test_train.py)."""

from polychromic.config import load_section
from polychromic.settings import TrainConfig
from polychromic.training import training_arguments


def test_max_grad_norm_is_the_trainers_clipping(tmp_path):
    for value in (0.0, 0.5):
        config = load_section(TrainConfig, {"train": {"max_grad_norm": value}}, "train")
        assert training_arguments(config, tmp_path, seed=0).max_grad_norm == value


def test_the_final_val_loss_is_the_logged_one_of_the_saved_adapter():
    """The saved adapter's val loss is the evaluation logged at its step (the last step, or
    the best one when early stopping loaded it); only without one is there a new pass."""
    from types import SimpleNamespace

    from polychromic.stages.train import final_val_loss

    class Trainer:
        def __init__(self, history, best=None, load_best=False, step=8):
            self.state = SimpleNamespace(global_step=step, best_model_checkpoint=best,
                                         log_history=history)
            self.args = SimpleNamespace(load_best_model_at_end=load_best)
            self.passes = 0

        def remove_callback(self, callback):
            pass

        def evaluate(self, metric_key_prefix):
            self.passes += 1
            return {f"{metric_key_prefix}_loss": 9.0}

    history = [{"loss": 3.0, "step": 4}, {"eval_loss": 2.5, "step": 4},
               {"eval_loss": 2.7, "step": 8}, {"train_loss": 2.9, "step": 8}]
    last = Trainer(history)
    assert final_val_loss(last) == 2.7 and last.passes == 0
    best = Trainer(history, best="checkpoints/checkpoint-4", load_best=True)
    assert final_val_loss(best) == 2.5 and best.passes == 0
    not_loaded = Trainer(history, best="checkpoints/checkpoint-4", load_best=False)
    assert final_val_loss(not_loaded) == 2.7
    unevaluated = Trainer(history, step=10)
    assert final_val_loss(unevaluated) == 9.0 and unevaluated.passes == 1

