#!/usr/bin/env bash
# A real single-node Slurm for tests: one node with two placeholder GPUs (Gres=gpu:2).
#   bash scripts/slurm_local.sh start   # installs slurmctld/slurmd/munge when missing (root + apt), starts them
#   bash scripts/slurm_local.sh stop    # stops every daemon it started
# Prints "slurm-local: ready" on success, or one "slurm-local: skip: REASON" line and exits 3 where it
# cannot run (not root, no apt, daemons that will not start). State lives in $SLURM_LOCAL_DIR.
set -u
DIR=${SLURM_LOCAL_DIR:-/tmp/energykit-slurm}
CONF=$DIR/etc
skip() { echo "slurm-local: skip: $*"; exit 3; }

start() {
  [ "$(id -u)" = 0 ] || skip "needs root to install and run slurmctld/slurmd/munged"
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
     || ! command -v sbatch >/dev/null; then
    command -v apt-get >/dev/null || skip "slurm is not installed and there is no apt-get"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd munge slurm-client) \
      >"$DIR.apt.log" 2>&1 || skip "apt-get install slurmctld slurmd munge failed (see $DIR.apt.log)"
  fi
  stop >/dev/null 2>&1
  rm -rf "$DIR"; mkdir -p "$CONF" "$DIR/state" "$DIR/spool" "$DIR/log" "$DIR/gpu" "$DIR/munge" "$DIR/run"
  host=$(hostname -s)
  # placeholder character devices for the two fake GPUs (Slurm wants device files; nothing opens them:
  # the test meters no GPU) — /dev/null's and /dev/zero's numbers, or links to them without CAP_MKNOD
  mknod "$DIR/gpu/nvidia0" c 1 3 2>/dev/null || ln -s /dev/null "$DIR/gpu/nvidia0"
  mknod "$DIR/gpu/nvidia1" c 1 5 2>/dev/null || ln -s /dev/zero "$DIR/gpu/nvidia1"
  # munge: a key, and the daemon (as root, so --force)
  dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none; chmod 400 "$DIR/munge/munge.key"
  munged --force --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/seed" \
    || skip "munged did not start"
  mem=$(awk '/MemTotal/ {print int($2/1024/2)}' /proc/meminfo)
  cpus=$(nproc)
  cat >"$CONF/slurm.conf" <<CONFEOF
ClusterName=energykit
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
GresTypes=gpu
MaxArraySize=1000
NodeName=$host CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONFEOF
  cat >"$CONF/gres.conf" <<GRESEOF
NodeName=$host Name=gpu File=$DIR/gpu/nvidia[0-1]
GRESEOF
  export SLURM_CONF=$CONF/slurm.conf
  slurmctld -c -f "$SLURM_CONF" || skip "slurmctld did not start (see $DIR/log/slurmctld.log)"
  slurmd -f "$SLURM_CONF" || skip "slurmd did not start (see $DIR/log/slurmd.log)"
  for _ in $(seq 1 60); do
    state=$(sinfo -h -N -o "%t" 2>/dev/null | head -1)
    case "$state" in idle|idle*) echo "slurm-local: ready (SLURM_CONF=$SLURM_CONF, node $host, gpu:2)"; return 0;; esac
    sleep 1
  done
  skip "the node did not become idle (state '${state:-none}'; see $DIR/log)"
}

stop() {
  export SLURM_CONF=$CONF/slurm.conf
  [ -f "$SLURM_CONF" ] && scontrol shutdown >/dev/null 2>&1
  for pidf in "$DIR/run/slurmd.pid" "$DIR/run/slurmctld.pid" "$DIR/munge/munged.pid"; do
    [ -f "$pidf" ] && kill "$(cat "$pidf")" 2>/dev/null
  done
  sleep 1
  pkill -f "slurmd -f $CONF" 2>/dev/null; pkill -f "slurmctld -c -f $CONF" 2>/dev/null
  pkill -f "munged --force --key-file=$DIR" 2>/dev/null
  echo "slurm-local: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
