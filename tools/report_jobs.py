"""Run `python ...` commands from the project folder, several at once, one GPU each: the report's jobs."""
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def from_root(path):
    """A path as the project folder reaches it: relative ('reports/fast/runs/x', '../shared/data/omniglot'),
    so that what the runs record (log dirs, data folders) holds no machine's absolute paths."""
    return os.path.relpath(path, ROOT) if os.path.isabs(path) else path


def portable(command):
    """The command with each absolute path ('/x/y', '--flag=/x/y') made relative to the project folder."""
    def word_from_root(word):
        flag, equals, value = word.rpartition('=') if word.startswith('--') else ('', '', word)
        return f'{flag}{equals}{from_root(value)}' if os.path.isabs(value) else word
    return [word_from_root(word) for word in command]


def run_command(command):
    """Run `python script ...` from the project folder with this interpreter, echoing it."""
    run_commands([command], jobs=1)


def run_commands(commands, jobs, gpus=(), logs=None):
    """Run `python ...` commands from the project folder, up to `jobs` at once, their absolute
    paths made relative to it (portable).

    With jobs > 1 each command's output goes to the matching file of logs, and
    with GPUs listed (`gpus`: CUDA device ids) each running command gets one of
    them alone through CUDA_VISIBLE_DEVICES. The first command that fails stops
    the others and raises SystemExit with one line naming it.
    """
    waiting, running, failed = list(enumerate(map(portable, commands))), {}, []
    free = list(gpus)
    while waiting or running:
        while waiting and len(running) < jobs:
            index, command = waiting.pop(0)
            env = dict(os.environ)
            gpu = free.pop(0) if free else None
            if gpu is not None:
                env['CUDA_VISIBLE_DEVICES'] = str(gpu)
            print('$ ' + ' '.join(command) + (f'   (GPU {gpu})' if gpu is not None else ''), flush=True)
            if jobs > 1:
                os.makedirs(os.path.dirname(os.path.abspath(logs[index])), exist_ok=True)
            output = open(logs[index], 'w') if jobs > 1 else None
            running[index] = (subprocess.Popen([sys.executable, *command[1:]], cwd=ROOT, env=env, stdout=output,
                                               stderr=subprocess.STDOUT if output else None), command, gpu, output)
        for index, (process, command, gpu, output) in list(running.items()):
            if process.poll() is None:
                continue
            del running[index]
            if output:
                output.close()
            if gpu is not None:
                free.append(gpu)
            if process.returncode != 0:
                failed.append(f'{" ".join(command)} failed (exit {process.returncode}'
                              + (f', output in {logs[index]})' if output else ', see above)'))
        if failed:
            stop(running)
            raise SystemExit(f'error: {failed[0]}; fix it and run report.py again: finished runs are kept, '
                             'stopped ones resume')
        time.sleep(0.1)


def stop(running):
    """Stop the running commands (each resumes from its latest checkpoint next time)."""
    for process, _, _, output in running.values():
        process.terminate()
        process.wait()
        if output:
            output.close()


def visible_gpus(device):
    """The CUDA device ids jobs may take, one each, when the report runs on GPUs."""
    if device not in ('gpu', 'cuda'):
        return []
    import torch
    listed = os.environ.get('CUDA_VISIBLE_DEVICES')
    ids = [d for d in listed.split(',') if d.strip()] if listed else list(range(torch.cuda.device_count()))
    return ids if len(ids) > 1 else []
