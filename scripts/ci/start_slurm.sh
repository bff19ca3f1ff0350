#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for CI and for trying profiles/slurm by hand.
#
# Installs slurmctld, slurmd and munge from Debian packages when missing, writes a minimal
# /etc/slurm/slurm.conf (no accounting database: job states come from squeue, so jobs are kept in
# slurmctld's memory for MinJobAge seconds after they end), starts munged (as user munge),
# slurmctld and slurmd, and waits until the node takes jobs. Idempotent: a cluster that already
# answers is left as it is. Needs root. Tested on Debian 12 (Slurm 22.05).
#
# The node declares SLURM_CI_GPUS (default 2) GPUs as a GRES backed by stand-in device files
# (/dev/fakegpuN, copies of /dev/null): `sbatch --gpus=2` is then scheduled, counted and given
# CUDA_VISIBLE_DEVICES as on a GPU cluster, so profiles/slurm runs unchanged; the processes run on
# the CPU (the cluster rehearsal, tests/workflow/test_rehearsal.py).
set -euo pipefail

CONF=/etc/slurm/slurm.conf
PARTITION=${SLURM_CI_PARTITION:-debug}
GPUS=${SLURM_CI_GPUS:-2}

log() { echo "start_slurm: $*" >&2; }

node_ready() {
    sinfo -h -p "$PARTITION" -o '%t %G' 2>/dev/null | grep -qE "^(idle|mix|alloc) .*gpu:${GPUS}"
}

if node_ready; then
    log "cluster already up: $(sinfo -h -o '%P %D %t %N' | tr '\n' ' ')"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null; then
    log "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends slurm-wlm munge
fi

# munge: a key, its runtime folders, the daemon as user munge.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    if command -v mungekey >/dev/null; then
        runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
fi
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
    munge -n | unmunge >/dev/null
fi

# Stand-in GPU devices for the GRES.
install -d -m 0755 /etc/slurm
for i in $(seq 0 $((GPUS - 1))); do
    [ -e "/dev/fakegpu$i" ] || mknod -m 0666 "/dev/fakegpu$i" c 1 3
done
printf '# Written by scripts/ci/start_slurm.sh: stand-in GPUs (no CUDA behind them).\n%s\n' \
    "Name=gpu File=/dev/fakegpu[0-$((GPUS - 1))]" >/etc/slurm/gres.conf

# slurm.conf: this host as controller and only node, resources as slurmd detects them.
host=$(hostname -s)
node="$(slurmd -C | head -n 1 | sed -E "s/^NodeName=[^ ]+/NodeName=${host}/") Gres=gpu:${GPUS}"
install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
tmp=$(mktemp)
cat >"$tmp" <<EOF
# Written by scripts/ci/start_slurm.sh: a one-node cluster on localhost.
ClusterName=detnas-ci
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
# No accounting database: squeue answers job states, for MinJobAge seconds after a job ends
# (snakemake-executor-plugin-slurm needs >= 120 s to trust squeue).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=30
${node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=${PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
changed=0
if ! cmp -s "$tmp" "$CONF"; then
    mv "$tmp" "$CONF"
    chmod 0644 "$CONF"
    log "wrote $CONF"
    changed=1
else
    rm -f "$tmp"
fi

# Start (or restart, when one died) the daemons.
stop_pidfile() {
    local pidfile=$1
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill "$(cat "$pidfile")"
        sleep 1
    fi
}
if [ "$changed" = 1 ] || ! scontrol ping 2>/dev/null | grep -q 'is UP'; then
    stop_pidfile /run/slurmctld.pid
    log "starting slurmctld"
    slurmctld
fi
for _ in $(seq 30); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 1; done
stop_pidfile /run/slurmd.pid
log "starting slurmd"
slurmd

for _ in $(seq 60); do
    node_ready && break
    state=$(sinfo -h -o '%t' 2>/dev/null | head -n 1)
    case "$state" in
        down*|drain*|unk*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
if ! node_ready; then
    log "the node did not come up; see /var/log/slurm/"
    sinfo -N -l >&2 || true
    tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
    exit 1
fi
log "cluster up: $(sinfo -h -o '%P %D %t %N' | tr '\n' ' ')"
