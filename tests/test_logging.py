"""TensorBoard: the first training scalars are on disk before the first validation pass."""
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import maml
from fewshot.engine import evaluation


def test_the_first_training_step_is_logged_before_validating(monkeypatch, tmp_path):
    seen, validate = [], evaluation.validate

    def looking(*args, **kwargs):
        events = EventAccumulator(str(tmp_path))
        events.Reload()
        seen.append([event.step for event in events.Scalars('loss/train')] if 'loss/train' in events.Tags()['scalars']
                    else [])
        return validate(*args, **kwargs)
    monkeypatch.setattr(evaluation, 'validate', looking)
    maml.main(['--dataset', 'sinusoid', '--num_train_iterations', '2', '--num_val_tasks', '2', '--val_interval', '1',
               '--log_dir', str(tmp_path)])
    assert seen[0] == [0]  # step 0's training loss, then its validation
