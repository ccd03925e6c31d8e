"""toolenv.py: what a tool test starts with: where the source, the tools and the golden data are
($CAV_SRC, $CAV_BIN, $CAV_ASAN_BIN, $CAV_REF and $CAV_TEST_LOGS as the Makefile sets them, else the build
tree beside this file), the micro model's options, mpirun's prefix, a scratch directory per test, the
comparison of two runs' last checkpoints, and the PASS/FAIL lines tests/run.sh counts, with the failure count
for the exit status (sys.exit(toolenv.status()))."""
import os
import shutil
import sys
import tempfile

SRC = os.environ.get('CAV_SRC', os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BIN = os.environ.get('CAV_BIN', os.path.join(SRC, 'build', 'bin'))
ASAN_BIN = os.environ.get('CAV_ASAN_BIN', os.path.join(SRC, 'build', 'asan', 'bin'))
MPIFAIL = os.environ.get('CAV_MPIFAIL', os.path.join(SRC, 'build', 'mpifail.so'))  # tests/faultinj/mpifail.c
REF = os.environ.get('CAV_REF', os.path.join(SRC, 'build', 'ref'))
LOGS = os.environ.get('CAV_TEST_LOGS', os.path.join(SRC, 'build', 'test-logs'))
REF_PY = os.path.join(SRC, 'tests', 'ref')  # the independent references (cavmae_ref, st_io, ...)

# The smallest model the trainers build (a few thousand parameters): for tests of the run, not the numbers.
# MICRO_FT is its encoder alone, for cav-finetune (no decoder); MICRO adds cav-pretrain's decoder.
MICRO_FT = ["--set", "audio_length=64", "--set", "img_size=32", "--set", "embed_dim=32", "--set", "num_heads=2",
            "--set", "depth=2", "--set", "modality_specific_depth=1"]
MICRO = MICRO_FT + ["--set", "decoder_embed_dim=16", "--set", "decoder_depth=1", "--set", "decoder_num_heads=2"]

_fails = 0


def tool(name):
    """The path of a built tool."""
    return os.path.join(BIN, name)


def scratch(prefix):
    """A fresh temporary directory for one test program."""
    return tempfile.mkdtemp(prefix=prefix)


def report(name, ok, why=''):
    """One PASS or FAIL line; a failure counts towards status()."""
    global _fails
    print(('PASS %s' % name) if ok else ('FAIL %s: %s' % (name, why)), flush=True)
    _fails += not ok


def failures():
    return _fails


def status():
    """The exit status: 1 when anything failed."""
    return 1 if _fails else 0


def mpirun(ranks=2):
    """The command prefix that runs a tool as `ranks` MPI ranks on this machine (oversubscribed, unbound; with
    mpi_env()), or None where Open MPI's mpirun is missing."""
    path = shutil.which('mpirun')
    return [path, '-np', str(ranks), '--oversubscribe', '--bind-to', 'none'] if path else None


def mpi_env():
    """The environment for mpirun (and for the one-process run it is compared with): root allowed, one OpenMP
    thread a process."""
    return dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT='1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM='1', OMP_NUM_THREADS='1')


# Tests of a failure that every rank must stop on: mpirun kills the whole job at the first rank's non-zero exit,
# so another rank may die before it prints or exits (a race CI met). mpi_env_all_exit() tells mpirun to let
# every rank finish (Open MPI 4's name and 5's); mpirun then exits 0 whatever the ranks did, so each rank's
# command goes through each_rank(), which prints its exit code, and rank_exits() reads them back.
def mpi_env_all_exit(env=None):
    return dict(env or mpi_env(), OMPI_MCA_orte_abort_on_non_zero_status='0',
                PRTE_MCA_prte_abort_on_non_zero_status='0')


def each_rank(args, before=''):
    """args run by a shell that prints 'rank exit N' to stderr after it; `before`: shell commands run first
    (e.g. a ulimit for that rank alone)."""
    return ['bash', '-c', before + '"$@"; st=$?; echo "rank exit $st" >&2; exit $st', 'bash'] + list(args)


def rank_exits(stderr):
    """The exit codes each_rank() printed, as ints, in the order the ranks finished."""
    import re
    return [int(c) for c in re.findall(r'rank exit (\d+)', stderr)]


def safetensors_f32(path):
    """A .safetensors file of float32 tensors as name -> flat numpy array."""
    import json
    import struct
    import numpy as np
    with open(path, 'rb') as f:
        b = f.read()
    n = struct.unpack('<Q', b[:8])[0]
    return {k: np.frombuffer(b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]], dtype=np.float32)
            for k, v in json.loads(b[8:8 + n]).items() if k != '__metadata__'}


def last_checkpoint(run):
    """The newest epoch-named checkpoint directory of a run."""
    d = os.path.join(run, 'checkpoints')
    return os.path.join(d, sorted(x for x in os.listdir(d) if x.startswith('e'))[-1])


def same_checkpoints(a, b):
    """'' when two runs' last checkpoints are byte-identical (model, optimiser, state), else what differs."""
    import numpy as np
    ca, cb = last_checkpoint(a), last_checkpoint(b)
    if os.path.basename(ca) != os.path.basename(cb):
        return 'checkpoints %s vs %s' % (os.path.basename(ca), os.path.basename(cb))

    def read(p):
        with open(p, 'rb') as f:
            return f.read()
    bad = [f for f in ('model.safetensors', 'optim.safetensors', 'state.json')
           if read(os.path.join(ca, f)) != read(os.path.join(cb, f))]
    if not bad:
        return ''
    ta, tb = (safetensors_f32(os.path.join(c, 'model.safetensors')) for c in (ca, cb))
    diff = max(float(np.max(np.abs(ta[k] - tb[k]))) for k in ta)
    return '%s differ (parameters: max abs %.3g)' % (','.join(bad), diff)


def use_ref():
    """Puts tests/ref (the independent Python references) on the import path."""
    if REF_PY not in sys.path:
        sys.path.insert(0, REF_PY)


def test(fn):
    """Runs the check fn: PASS, or FAIL with what it raised."""
    try:
        fn()
    except Exception as e:  # noqa: BLE001 (any failure is reported as FAIL)
        report(fn.__name__, False, str(e).replace('\n', ' ')[:1500])
    else:
        report(fn.__name__, True)
