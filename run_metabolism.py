"""Few-shot learning on the TDC metabolism assays (the course's Part 4): 2-way
tasks of CYP inhibition/substrate labels on 1024-bit Morgan fingerprints,
with ProtoNet or MAML on an MLP encoder.

    bash run_bio.sh                                        # the course's ProtoNet run
    python run_metabolism.py --datadir ../shared/data/metabolism --algorithm maml
    python run_metabolism.py --test --log_dir D --checkpoint_step S --datadir DIR
"""
import argparse

import maml
import metabolism
import networks
import protonet
import training
import util

ENCODER_SIZES = (metabolism.FINGERPRINT_BITS, 500, 500)  # as in the course and MLTI


def mlp_encoder():
    """2 x [Linear -> BatchNorm1d -> LeakyReLU]: (T*M, 1024) -> (T*M, 500)."""
    return protonet.FunctionalNet(networks.mlp_features, networks.init_mlp_params(ENCODER_SIZES))


def build_learner(args, device):
    if args.algorithm == 'protonet':  # one encoder call per meta-batch: the MLP is too small to loop over tasks
        return protonet.ProtoNet(mlp_encoder(), args.learning_rate, device, tasks_per_call=args.batch_size,
                                 joint_batch_norm=args.joint_batch_norm)
    params = networks.init_mlp_params(ENCODER_SIZES, num_outputs=args.num_way)
    return maml.MAML(args.num_way, args.num_inner_steps, args.inner_lr, args.learn_inner_lrs, args.learning_rate,
                     args.first_order, device=device, vmap_tasks=maml.vmap_choice(args),
                     params=params, forward=networks.mlp_net)


def default_log_dir(args):
    name = (f'./logs/metabolism/{args.algorithm}.way_{args.num_way}.support_{args.num_support}'
            f'.query_{args.num_query}.lr_{args.learning_rate}.batch_size_{args.batch_size}')
    if args.joint_batch_norm:
        name += '.joint_bn'
    if args.algorithm == 'maml':
        name += (f'.inner_steps_{args.num_inner_steps or 1}.inner_lr_{args.inner_lr}'
                 f'.learn_inner_lrs_{args.learn_inner_lrs}.first_order_{args.first_order}')
    return name


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train or test ProtoNet or MAML on the TDC metabolism assays.')
    training.add_common_args(parser, num_train_iterations=8000, batch_size=4, num_way=2, num_support=5,
                             num_query=10, num_val_tasks=600)
    parser.add_argument('--learning_rate', type=float, default=0.0005, help='Adam learning rate (outer, for MAML)')
    parser.add_argument('--algorithm', choices=['protonet', 'maml'], default='protonet')
    protonet.add_batch_norm_arg(parser)
    maml.add_inner_loop_args(parser, inner_lr=0.1)
    metabolism.add_args(parser)
    return training.parse_checked(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    if args.learning_rate <= 0:
        raise util.UserError('--learning_rate must be positive')
    maml.check_inner_loop_args(args)
    if args.joint_batch_norm and args.algorithm != 'protonet':
        raise util.UserError('--joint_batch_norm is a ProtoNet flag; drop it for --algorithm maml')
    return training.run(args, args.log_dir or default_log_dir(args), build_learner, metabolism.build_sampler)


if __name__ == '__main__':
    util.run_cli(main)
