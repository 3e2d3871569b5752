"""Prototypical Networks (Snell et al., 2017): embed the support examples, average them
per class into prototypes, classify each query by its negative squared distances to them
(or, with --metric cosine, by its cosine similarities to them times a learned scale)."""
import contextlib

import torch
import torch.nn.functional as F

from fewshot import contracts, execution, flags, networks, tasks
from fewshot.errors import UserError
from fewshot.flags import TEST_TIME, Flag, positive_int

FAST_NOTICE = ("the library computes the steps (fewshot/algorithms/protonet.py: a meta-batch's tasks scored at once, "
               "the fastest encoder calls and image layout tuned), tested equal to protonet.py's ProtoNet._step")
TEST_VIEWS_SEED = 0  # the distorted copies of test-time augmentation: the same for every evaluation and task
COSINE_SCALE = 10.0  # the learned scale's start: cosines in [-1, 1] times 10 give a softmax that can be confident


def prototype_logits(support, labels_support, query, num_way, cosine_scale=None):
    """Negative squared Euclidean distances to the class prototypes, or with cosine_scale (a scalar
    tensor) the cosine similarities to them times cosine_scale.

    Args:
        support: (B, N*K, D) support embeddings; labels_support: (B, N*K).
        query: (B, M, D) embeddings to classify.
    Returns:
        (B, M, N) logits, at least float32: under --precision bf16 too, whose 8-bit
        mantissa would round the small differences between squared distances away.
    """
    with torch.autocast(support.device.type, enabled=False):
        dtype = torch.promote_types(support.dtype, torch.float32)
        support, query = support.to(dtype), query.to(dtype)
        one_hot = F.one_hot(labels_support, num_way).to(support.dtype)  # (B, N*K, N)
        prototypes = one_hot.transpose(1, 2) @ support / one_hot.sum(1).unsqueeze(-1)  # (B, N, D)
        if cosine_scale is not None:
            return cosine_scale * F.normalize(query, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(1, 2)
        return -(query.unsqueeze(2) - prototypes.unsqueeze(1)).square().sum(-1)


class ProtoNet(contracts.Learner):
    """A ProtoNet learner: an encoder and the ProtoNet loss. By default every step goes through
    _step (the library's: task_metrics' means; protonet.py's ProtoNet writes it out), evaluation
    task by task; fast: task_metrics scores a meta-batch at once, and the ways to call the encoder
    are offered to tuning."""

    key_metric = 'query'
    task = tasks.CLASSIFICATION

    def __init__(self, network, device='cpu', tasks_per_call=None, joint_batch_norm=False, channels_last=False,
                 inductive=False, test_views=1, distort=None, train_inductive=False, metric='euclidean', fast=False):
        """network: maps (T*M, ...) examples of T tasks (num_tasks=T) to (T*M, D) embeddings.
        tasks_per_call, channels_last: how the encoder goes over a meta-batch (execution.EncoderCalls);
            None: the device's default, both ways offered to tuning.
        joint_batch_norm: a task's support and query examples share batch-norm statistics.
            By default each set has its own, as in the course, whose step encodes
            support and query in two calls.
        inductive: evaluate() normalises every query with its task's support statistics alone,
            so each query is classified on its own from the support set; train_inductive: loss() too.
        test_views, distort: evaluate() averages each image's embedding over the image and
            test_views - 1 copies distorted by distort(images, generator), drawn from a fixed seed.
        metric: 'euclidean' (the paper's) or 'cosine' (cosine similarity times a learned scale).
        fast: False steps through _step, tasks_per_call and channels_last left at None taking per-task
            calls and contiguous images."""
        if not fast:
            tasks_per_call, channels_last = tasks_per_call or 1, bool(channels_last)
        self.fast = fast
        self.notice = FAST_NOTICE if fast else None
        self.device = torch.device(device)
        self._network = network.to(self.device)
        self.joint_batch_norm, self.inductive, self.train_inductive = joint_batch_norm, inductive, train_inductive
        self.test_views, self.distort = test_views, distort
        self.calls = execution.EncoderCalls(tasks_per_call, channels_last, self.device)
        self.cosine_scale = (torch.tensor(COSINE_SCALE, device=self.device, requires_grad=True)
                             if metric == 'cosine' else None)
        self._scoring = (False, 1)  # task_metrics' inductive and views when not given (scored())

    def execution_options(self, sample=None):
        return self.calls.options(None if sample is None else len(sample))

    def parameters(self):
        return list(self._network.parameters()) + ([self.cosine_scale] if self.cosine_scale is not None else [])

    def embed(self, examples):
        """(B, M, ...) examples of B tasks -> (B, M, D) embeddings, batch-norm statistics per task."""
        return self.calls(self._network, examples)

    def embed_task(self, images_support, images_query, inductive=False):
        """(B, N*K, D) support and (B, N*Q, D) query embeddings under the batch-norm choice:
        inductive (queries with the support set's statistics), joint, or per set."""
        num_support = images_support.shape[1]
        if inductive or self.joint_batch_norm:
            with networks.statistics_of_first(num_support) if inductive else contextlib.nullcontext():
                embeddings = self.embed(torch.cat([images_support, images_query], dim=1))
            return embeddings[:, :num_support], embeddings[:, num_support:]
        return self.embed(images_support), self.embed(images_query)

    def logits(self, task_batch, inductive=False, views=1):
        """(B, N*K, N) support logits and (B, N*Q, N) query logits of a TaskBatch; inductive: the
        queries normalised with the support set's batch-norm statistics; views: embeddings averaged
        over the images and views - 1 distorted copies."""
        with self.scored(inductive, views):
            support, query = self.embeddings(task_batch)
        num_way = int(task_batch.labels_support.max()) + 1
        labels = task_batch.labels_support
        return (prototype_logits(support, labels, support, num_way, self.cosine_scale),
                prototype_logits(support, labels, query, num_way, self.cosine_scale))

    def task_metrics(self, task_batch, inductive=None, views=None):
        """Mean query NLL over all tasks, and (B,) per-task support and query accuracies.
        inductive, views: as logits() takes them; None: as scored() set them (else False, 1)."""
        inductive = self._scoring[0] if inductive is None else inductive
        support_logits, query_logits = self.logits(task_batch, inductive, self._scoring[1] if views is None else views)
        loss = F.cross_entropy(query_logits.flatten(0, 1), task_batch.labels_query.flatten())
        accuracy = {
            'support': tasks.task_accuracy(support_logits, task_batch.labels_support),
            'query': tasks.task_accuracy(query_logits, task_batch.labels_query)}
        return loss, accuracy

    def _step(self, task_batch):
        """One step's (loss, support accuracy, query accuracy), means over the tasks: the library's
        definition, task_metrics' means (protonet.py's ProtoNet writes it out)."""
        loss, accuracy = self.task_metrics(task_batch)
        return loss, accuracy['support'].mean().item(), accuracy['query'].mean().item()

    def embeddings(self, task_batch):
        """(B, N*K, D) support and (B, N*Q, D) query embeddings, float32 or wider, as the step scores
        them (scored(): --inductive, --test_views)."""
        inductive, views = self._scoring
        support, query = self.embed_task(task_batch.images_support, task_batch.images_query, inductive)
        generators = [torch.Generator().manual_seed(TEST_VIEWS_SEED) for _ in range(len(task_batch))]  # a task's
        for _ in range(views - 1):  # copies do not depend on the tasks evaluated with it
            images = [torch.cat([self.distort(x[i:i + 1].cpu(), generator) for i, generator in enumerate(generators)])
                      .to(x.device) for x in (task_batch.images_support, task_batch.images_query)]
            extra_support, extra_query = self.embed_task(*images, inductive)
            support, query = support + extra_support, query + extra_query
        dtype = torch.promote_types(support.dtype, torch.float32)
        return (support / views).to(dtype), (query / views).to(dtype)

    def loss(self, task_batch, step):
        """The training objective (scalar) and (B,) per-task support and query accuracies: _step's,
        each task given the means (fast: task_metrics')."""
        if self.fast:
            loss, accuracy = self.task_metrics(task_batch, self.train_inductive)
            return loss, {k: v.detach() for k, v in accuracy.items()}
        with self.scored(self.train_inductive, 1):
            loss, support, query = self._step(task_batch)
        like = dict(size=(len(task_batch),), device=self.device)
        return loss, {'support': torch.full(fill_value=support, **like), 'query': torch.full(fill_value=query, **like)}

    @torch.no_grad()
    def evaluate(self, task_batch):
        """(B,) per-task loss and accuracies: _step task by task (fast: task_metrics at once)."""
        if self.fast:
            loss, accuracy = self.task_metrics(task_batch, self.inductive, self.test_views)
            return {'loss': loss.expand(len(task_batch)), **accuracy}
        with self.scored(self.inductive, self.test_views):
            rows = [self._step(task_batch.select(slice(i, i + 1))) for i in range(len(task_batch))]
        losses, support, query = zip(*rows)
        return {'loss': torch.stack(losses), 'support': torch.tensor(support, device=self.device),
                'query': torch.tensor(query, device=self.device)}

    @contextlib.contextmanager
    def scored(self, inductive, views):
        """Inside, task_metrics (and so the course's _step) scores with these inductive and views."""
        before, self._scoring = self._scoring, (inductive, views)
        try:
            yield
        finally:
            self._scoring = before

    @contextlib.contextmanager
    def queries_alone(self):
        before, self.inductive = self.inductive, True
        try:
            yield True
        finally:
            self.inductive = before

    def buffers(self):
        """The encoder's batch-norm running statistics (--running_statistics), else none."""
        return list(self._network.buffers())

    def state(self):
        scale = {} if self.cosine_scale is None else {'cosine_scale': self.cosine_scale.detach().clone()}
        return {'network': self._network.state_dict(), **scale}

    def load_state(self, state):
        self._network.load_state_dict(state['network'])
        if self.cosine_scale is not None:
            with torch.no_grad():
                self.cosine_scale.copy_(state['cosine_scale'])


ENCODER_CALLS = {'auto': None, 'per_task': 1, 'batched': execution.ALL_TASKS}


def encoder_calls(args, dataset):
    """--encoder_calls as tasks per call; on examples that are not images one batched call (small
    networks: a per-task loop only adds overhead)."""
    return ENCODER_CALLS[args.encoder_calls] if dataset.images else execution.ALL_TASKS


class ProtoNetAlgorithm(contracts.Algorithm):
    name = 'protonet'
    task_kinds = ('classification',)  # the common flags' own defaults are the course's ProtoNet ones
    flags = (
        Flag('--encoder_calls', choices=list(ENCODER_CALLS), default='auto', execution=True, at_test=TEST_TIME,
             resume_may_change=True, help='encode a meta-batch task by task or in one call (same numbers); '
                                          'auto: the faster on this machine, timed once at the start of '
                                          'training and cached (images only; other examples: batched)'),
        Flag('--joint_batch_norm', default=False, action='store_true',
             help="normalise a task's support and query images together (default: separately, as the course does)"),
        Flag('--running_statistics', default=False, action='store_true', log_name=True, before_it_existed=False,
             help='keep batch-norm running statistics while training (momentum 0.1) and normalise with them at '
                  "validation and test, as Snell et al.'s code evaluates (default: each set's batch statistics, "
                  'as the course does; --inductive then changes nothing)'),
        Flag('--inductive', default=False, action='store_true', log_name=True, at_test=TEST_TIME,
             resume_may_change=True,
             help="at validation and test, normalise each query image with its task's support statistics "
                  "alone, so it is classified on its own (default: the queries' batch statistics, as the course "
                  'does)'),
        Flag('--train_inductive', default=False, action='store_true', log_name=True,
             help="train as --inductive evaluates: each query normalised with its task's support statistics"),
        Flag('--metric', choices=('euclidean', 'cosine'), default='euclidean', log_name=True,
             before_it_existed='euclidean',
             help='squared Euclidean distances to the prototypes (the paper\'s), or cosine similarities '
                  'times a learned scale'),
        Flag('--test_views', type=positive_int, default=1, at_test=TEST_TIME, resume_may_change=True, group=flags.TEST,
             help="at validation and test, average each image's embedding over itself and V - 1 copies "
                  'distorted as --augment_affine does (1: none)'),
    )

    def recognizes_older(self, checkpoint):
        return 'network' in checkpoint['learner']

    def build_learner(self, args, dataset, device, learner_class=None):
        """learner_class: protonet.py's ProtoNet (its _step), or None: the library's."""
        if args.test_views > 1 and dataset.distort is None:
            raise UserError(f'--test_views {args.test_views}: --dataset {dataset.name} has no distortions '
                            'to average over; leave it at 1')
        params, forward = dataset.network(args)
        network = (networks.RunningStatisticsNet if args.running_statistics else networks.FunctionalNet)
        return (learner_class or ProtoNet)(
            network(forward, params), device, tasks_per_call=encoder_calls(args, dataset),
            joint_batch_norm=args.joint_batch_norm, channels_last=execution.image_layout_flag(args, dataset),
            inductive=args.inductive, train_inductive=args.train_inductive, test_views=args.test_views,
            distort=dataset.distort, metric=args.metric, fast=execution.library_steps(args))

    def log_name(self, args, changed):
        return (flags.task_log_name(args) + f'.lr_{args.learning_rate}'
                f'.batch_size_{args.batch_size}' + ('.joint_bn' if args.joint_batch_norm else '') + changed)
