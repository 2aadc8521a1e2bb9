#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the tests of preemption and
# requeue (tests/test_slurm.py) and for trying the submitit launcher by hand:
#   scripts/start_slurm.sh        # installs slurmctld, slurmd, munge (Debian), starts them
#   sinfo                         # one node, partition `debug`, idle
# Needs root (or sudo) and apt; where either is missing it says so and exits 0, and the
# SLURM tests skip with that reason. Running it again on a running cluster does nothing.
set -euo pipefail

sudo="" as_munge="runuser -u munge --"
if [ "$(id -u)" != 0 ]; then
  if ! sudo -n true 2>/dev/null; then
    echo "start_slurm: needs root or passwordless sudo; SLURM tests will be skipped"; exit 0
  fi
  sudo="sudo -n" as_munge="sudo -n -u munge"
fi

if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
  echo "start_slurm: a cluster is already up"; exit 0
fi

packages="slurmctld slurmd slurm-client munge"
missing=""
for p in $packages; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  if ! command -v apt-get >/dev/null; then
    echo "start_slurm: no apt-get to install$missing; SLURM tests will be skipped"; exit 0
  fi
  echo "start_slurm: installing$missing"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

host=$(hostname -s)
cpus=$(nproc)
memory_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))

# munge authenticates slurmctld and slurmd to each other
$sudo mkdir -p /run/munge /var/log/munge /var/lib/munge
$sudo chown munge:munge /run/munge /var/log/munge /var/lib/munge
[ -f /etc/munge/munge.key ] || $as_munge /usr/sbin/mungekey --create
$sudo chown munge:munge /etc/munge/munge.key && $sudo chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || $as_munge /usr/sbin/munged

$sudo mkdir -p /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm /run/slurm
$sudo tee /etc/slurm/slurm.conf >/dev/null <<EOF
# Written by tiedharness scripts/start_slurm.sh: one node, one partition, on localhost.
ClusterName=tiedharness
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF

pgrep -x slurmctld >/dev/null || $sudo /usr/sbin/slurmctld -i
pgrep -x slurmd >/dev/null || $sudo /usr/sbin/slurmd
for _ in $(seq 60); do
  state=$(sinfo -h -o %T 2>/dev/null || true)
  [ "$state" = idle ] && { echo "start_slurm: node $host idle in partition debug"; exit 0; }
  case "$state" in down*|drain*) $sudo scontrol update nodename="$host" state=resume || true;; esac
  sleep 1
done
echo "start_slurm: the node did not become idle; see /var/log/slurm/" >&2
exit 1
