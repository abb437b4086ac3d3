#!/usr/bin/env bash
# A real single-node Slurm cluster (with accounting) on this machine, for trying and testing
# `hydra/launcher=slurm` sweeps. No systemd, no system config touched: every key, socket, database,
# state file, spool, pid file and log lives under one folder (default /tmp/iqa-slurm).
#
#   sudo scripts/slurm_cluster.sh up [DIR]      # installs the Debian/Ubuntu packages if missing, starts
#                                               # munged, mariadbd, slurmdbd, slurmctld, slurmd; waits for
#                                               # the node to be idle; prints `export SLURM_CONF=...`
#   eval "$(sudo scripts/slurm_cluster.sh up)"  # the same, exporting SLURM_CONF in this shell
#   sudo scripts/slurm_cluster.sh status [DIR]  # which daemons run, sinfo
#   sudo scripts/slurm_cluster.sh down [DIR]    # cancels jobs, stops every daemon it started (safe twice)
#   sudo scripts/slurm_cluster.sh purge [DIR]   # down, then delete DIR
#   (make slurm-up / make slurm-down do up and down on the default folder)
#
# Needs root (slurmd starts jobs as their users; apt-get), bash, and on Debian/Ubuntu the packages
# slurmctld slurmd slurm-client munge slurmdbd mariadb-server (installed here with apt-get when missing;
# elsewhere install the equivalents). The ports are picked free at `up`, so a system Slurm or MySQL on
# the same machine is left alone. Jobs see the machine's own file systems: any folder works as a sweep
# folder. Partition: `debug` (the default one), all CPUs of the machine, memory as `slurmd -C` reports.
# Daemon logs: DIR/log/. The cluster is called `iqa` in accounting (sacct -M iqa).
set -euo pipefail

CMD=${1:-}
DIR=${2:-${IQA_SLURM_DIR:-/tmp/iqa-slurm}}
CLUSTER=iqa
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
UP_TIMEOUT=${IQA_SLURM_UP_TIMEOUT:-120}

usage() { echo "usage: $0 up|down|status|purge [DIR]   (default DIR: /tmp/iqa-slurm)" >&2; exit 2; }
die() { echo "slurm_cluster: $*" >&2; exit 1; }
log() { echo "slurm_cluster: $*" >&2; }

[[ $CMD =~ ^(up|down|status|purge)$ ]] || usage
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd -P)
CONF=$DIR/etc/slurm.conf
MUNGE_SOCK=$DIR/munge/run/munge.socket
export SLURM_CONF=$CONF

# ---------------------------------------------------------------------------------------------- helpers
pid_alive() {  # pid file -> 0 when the process it names runs and is the daemon that wrote it (a stale
  # file's pid may have been reused by another program: its name, /proc/PID/comm, tells them apart)
  local pid name
  [[ -s $1 ]] || return 1
  pid=$(cat "$1")
  name=$(basename "$1" .pid)
  [[ $name == mysqld ]] && name=mariadbd
  kill -0 "$pid" 2>/dev/null || return 1
  [[ ! -r /proc/$pid/comm ]] || [[ $(cat "/proc/$pid/comm") == "$name" || $name == mariadbd && $(cat "/proc/$pid/comm") == mysqld ]]
}

port_free() {  # nothing listens on 127.0.0.1:$1
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {  # variable name, first port: sets the variable to the first free port from there on,
  # skipping those already handed out in this run (no subshell: TAKEN_PORTS must persist)
  local p=$2
  while ! port_free "$p" || [[ " $TAKEN_PORTS " == *" $p "* ]]; do p=$((p + 1)); done
  TAKEN_PORTS="$TAKEN_PORTS $p"
  printf -v "$1" '%s' "$p"
}

wait_for() {  # description, pid file (or ""), command...: retry the command every 0.5 s for UP_TIMEOUT
  # seconds; give up at once when the daemon that wrote the pid file has exited
  local what=$1 pidfile=$2; shift 2
  local deadline=$((SECONDS + UP_TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if [[ -n $pidfile && -s $pidfile ]] && ! pid_alive "$pidfile"; then
      die "$what exited (logs: $DIR/log/): $(tail -n 2 "$DIR/log/$what.log" 2>/dev/null | tr '\n' ' ')"
    fi
    ((SECONDS < deadline)) || die "timed out after ${UP_TIMEOUT}s waiting for $what (logs: $DIR/log/)"
    sleep 0.5
  done
}

stop_pidfile() {  # name, pid file: SIGTERM, wait up to 20 s, then SIGKILL
  local name=$1 file=$2 pid
  [[ -s $file ]] || return 0
  pid=$(cat "$file")
  if pid_alive "$file"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not stop on SIGTERM, killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

find_bin() {  # first of the names that exists on PATH (plus sbin folders)
  local name
  for name in "$@"; do
    PATH=$PATH:/usr/sbin:/sbin command -v "$name" 2>/dev/null && return 0
  done
  return 1
}

# ---------------------------------------------------------------------------------------------- install
install_packages() {
  local missing=0 b
  for b in slurmctld slurmd sinfo sacct sacctmgr munged slurmdbd; do
    find_bin "$b" >/dev/null || missing=1
  done
  find_bin mariadbd mysqld >/dev/null || missing=1
  find_bin mariadb-install-db mysql_install_db >/dev/null || missing=1
  ((missing)) || return 0
  ((EUID == 0)) || die "Slurm/munge/MariaDB are not installed and installing them needs root: run with sudo"
  command -v apt-get >/dev/null || die "no apt-get: install ${PACKAGES[*]} (or your system's equivalents)"
  log "installing ${PACKAGES[*]} (apt-get)"
  # Keep the packages' maintainer scripts from starting system-wide munge/mariadb/slurm services.
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
  } >"$DIR/apt.log" 2>&1 || rc=$?
  ((made_policy)) && rm -f "$policy"
  ((rc == 0)) || die "apt-get failed (exit $rc), see $DIR/apt.log: $(tail -n 3 "$DIR/apt.log" | tr '\n' ' ')"
}

# ---------------------------------------------------------------------------------------------- up
start_munge() {
  local key=$DIR/munge/munge.key
  mkdir -p "$DIR/munge/run"
  chmod 755 "$DIR/munge" "$DIR/munge/run"  # clients (any user) must reach the socket
  if [[ ! -s $key ]]; then
    (umask 077 && head -c 1024 /dev/urandom >"$key")
  fi
  chmod 400 "$key"
  pid_alive "$DIR/munge/munged.pid" && return 0
  log "starting munged"
  "$(find_bin munged)" --force --key-file="$key" --socket="$MUNGE_SOCK" \
    --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
  wait_for munged "" test -S "$MUNGE_SOCK"
}

start_mariadb() {
  local data=$DIR/mysql/data sock=$DIR/mysql/mysqld.sock
  local server
  server=$(find_bin mariadbd mysqld) || die "no mariadbd/mysqld"
  if [[ ! -d $data/mysql ]]; then
    log "initialising MariaDB in $data"
    mkdir -p "$data"
    "$(find_bin mariadb-install-db mysql_install_db)" --no-defaults --datadir="$data" --user="$(id -un)" \
      --auth-root-authentication-method=socket --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 ||
      die "mariadb-install-db failed, see $DIR/log/mariadb-install.log"
  fi
  if ! pid_alive "$DIR/mysql/mysqld.pid"; then
    log "starting MariaDB on 127.0.0.1:$DB_PORT"
    "$server" --no-defaults --datadir="$data" --socket="$sock" --pid-file="$DIR/mysql/mysqld.pid" \
      --bind-address=127.0.0.1 --port="$DB_PORT" --user="$(id -un)" --log-error="$DIR/log/mariadb.log" \
      --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 --skip-log-bin \
      </dev/null >/dev/null 2>&1 &
    disown
  fi
  local client
  client=$(find_bin mariadb mysql) || die "no mariadb/mysql client"
  wait_for mariadb "$DIR/mysql/mysqld.pid" "$client" --no-defaults --socket="$sock" -uroot -e "SELECT 1"
  # The database user slurmdbd logs in as (TCP, 127.0.0.1), with a password kept in slurmdbd.conf.
  "$client" --no-defaults --socket="$sock" -uroot <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
}

write_configs() {
  local host node_line cpus mem
  host=$(hostname -s)
  # `slurmd -C`: "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 ... RealMemory=23994"
  node_line=$("$(find_bin slurmd)" -C | head -n 1)
  [[ $node_line == NodeName=* ]] || die "slurmd -C printed no node line: $node_line"
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")
  node_line=$(sed -e "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1/" -e 's/ *UpTime=.*//' <<<"$node_line")
  mkdir -p "$DIR/etc" "$DIR/state" "$DIR/spool" "$DIR/run"
  cat >"$CONF" <<EOF
# Written by scripts/slurm_cluster.sh: a single-node cluster, all state under $DIR.
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCK
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
# CR_CPU: memory is not a consumable (with CR_*_Memory and no DefMemPerCPU one job takes the whole node).
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
# Jobs leave slurmctld's memory soon; submitit reads their states from accounting (sacct).
MinJobAge=30
KillWait=10
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# The munge socket slurmctld authenticates to slurmdbd with (AuthInfo alone is not used for that).
AccountingStoragePass=$MUNGE_SOCK
$node_line State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  (
    umask 077
    cat >"$DIR/etc/slurmdbd.conf" <<EOF
# Written by scripts/slurm_cluster.sh (mode 600: it holds the database password).
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCK
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  )
  chmod 600 "$DIR/etc/slurmdbd.conf"
  echo "$cpus" >"$DIR/etc/cpus"
}

cluster_registered() { sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; }
node_idle() { [[ $(sinfo -h -N -p debug -o %T 2>/dev/null) == idle ]]; }

up() {
  install_packages
  mkdir -p "$DIR/log"
  if all_running; then
    log "already up"
    echo "export SLURM_CONF=$CONF"
    return 0
  fi
  ((EUID == 0)) || die "needs root (slurmd starts jobs as their users): run with sudo"
  if any_running; then  # a half-up cluster (a daemon died): start again from nothing
    log "only some daemons run: stopping them first"
    down
  fi
  local d
  for d in "${DAEMONS[@]}"; do rm -f "$DIR/${d#*:}"; done  # stale pid files of daemons that died
  # Ports: kept from an earlier `up` of this folder while free, else the next free ones.
  local ports=$DIR/etc/ports
  if [[ -s $ports ]]; then
    # shellcheck disable=SC1090
    source "$ports"
  fi
  TAKEN_PORTS=""
  free_port DB_PORT "${DB_PORT:-13306}"
  free_port DBD_PORT "${DBD_PORT:-16819}"
  free_port CTLD_PORT "${CTLD_PORT:-16817}"
  free_port SLURMD_PORT "${SLURMD_PORT:-16818}"
  mkdir -p "$DIR/etc"
  printf 'DB_PORT=%s\nDBD_PORT=%s\nCTLD_PORT=%s\nSLURMD_PORT=%s\n' "$DB_PORT" "$DBD_PORT" "$CTLD_PORT" \
    "$SLURMD_PORT" >"$ports"
  local pass_file=$DIR/etc/db.pass
  if [[ ! -s $pass_file ]]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$pass_file")
  fi
  DB_PASS=$(cat "$pass_file")

  start_munge
  start_mariadb
  write_configs
  if ! pid_alive "$DIR/run/slurmdbd.pid"; then
    log "starting slurmdbd on 127.0.0.1:$DBD_PORT"
    "$(find_bin slurmdbd)"
  fi
  wait_for slurmdbd "$DIR/run/slurmdbd.pid" sacctmgr -n show cluster
  cluster_registered || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  if ! pid_alive "$DIR/run/slurmctld.pid"; then
    log "starting slurmctld on port $CTLD_PORT"
    "$(find_bin slurmctld)" -c
  fi
  wait_for slurmctld "$DIR/run/slurmctld.pid" scontrol ping
  if ! pid_alive "$DIR/run/slurmd.pid"; then
    log "starting slurmd on port $SLURMD_PORT"
    "$(find_bin slurmd)"
  fi
  wait_for slurmd "$DIR/run/slurmd.pid" node_idle
  log "up: partition debug, $(cat "$DIR/etc/cpus") CPUs; logs in $DIR/log"
  echo "export SLURM_CONF=$CONF"
}

DAEMONS=("slurmd:run/slurmd.pid" "slurmctld:run/slurmctld.pid" "slurmdbd:run/slurmdbd.pid"
  "mariadbd:mysql/mysqld.pid" "munged:munge/munged.pid")

any_running() {
  local d
  for d in "${DAEMONS[@]}"; do pid_alive "$DIR/${d#*:}" && return 0; done
  return 1
}

all_running() {
  local d
  for d in "${DAEMONS[@]}"; do pid_alive "$DIR/${d#*:}" || return 1; done
}

# ---------------------------------------------------------------------------------------------- down
down() {
  # Jobs first, while slurmctld still runs: their processes would outlive slurmd.
  if pid_alive "$DIR/run/slurmctld.pid" && [[ -s $CONF ]]; then
    if [[ -n $(squeue -h -o %i 2>/dev/null) ]]; then
      log "cancelling the jobs still queued or running"
      scancel --full --quiet $(squeue -h -o %i) 2>/dev/null || true
      local deadline=$((SECONDS + 30))
      while [[ -n $(squeue -h -t running,completing -o %i 2>/dev/null) ]] && ((SECONDS < deadline)); do
        sleep 0.5
      done
    fi
  fi
  local d
  for d in "${DAEMONS[@]}"; do stop_pidfile "${d%%:*}" "$DIR/${d#*:}"; done
  log "down (state and logs kept in $DIR)"
}

status() {
  local d rc=0
  for d in "${DAEMONS[@]}"; do
    if pid_alive "$DIR/${d#*:}"; then
      echo "${d%%:*}: running (pid $(cat "$DIR/${d#*:}"))"
    else
      echo "${d%%:*}: stopped"
      rc=1
    fi
  done
  if ((rc == 0)); then
    sinfo
    echo "export SLURM_CONF=$CONF"
  fi
  return $rc
}

case $CMD in
  up) up ;;
  down) down ;;
  status) status ;;
  purge) down && rm -rf "$DIR" && log "removed $DIR" ;;
esac
