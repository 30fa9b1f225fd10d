#!/usr/bin/env bash
# Adds a device to Portway on an existing Debian or Raspberry Pi OS system: installs the portway-agent .deb
# with apt (which pulls nodejs >= 20 and the other dependencies), writes /etc/portway/agent.json from the
# flags below, and (re)starts portway-agent.service.
#
# Usage (as root):
#   install.sh --relay HOST:PORT (--ca-fingerprint HEX | --ca-file PEM) --name NAME
#              [--enroll-key-file FILE|-] [--service NAME=tcp:HOST:PORT]... [--log-level LEVEL]
#              [--no-start] [--config-only] [DEB]
#
#   DEB                 the package (default: the portway-agent_*_ARCH.deb for this machine's architecture, looked
#                       for in the current directory and then beside this script)
#   --enroll-key-file   file holding the enrollment key (`portway relay enroll-key create`), or - for stdin.
#                       The key can also come from the PORTWAY_ENROLL_KEY environment variable. Secrets never
#                       go on the command line, where every user can read them in ps.
#   --service           repeatable: a TCP service the device exposes, e.g. --service ssh=tcp:127.0.0.1:22
#   --config-only       write the config (and restart) without installing the package
#   --no-start          do not (re)start the agent
# Without --relay, the package is installed or upgraded and the existing config is kept.
# Exit status: 0 done; 2 bad usage; 1 anything else failed.
set -euo pipefail

CONFIG_DIR=/etc/portway
CONFIG="$CONFIG_DIR/agent.json"
UNIT=portway-agent.service

# Same rules as the agent's config schema (agent/src/config.ts).
NAME_RE='^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'
HOST_PORT_RE='^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$'
ENROLL_KEY_RE='^[A-Za-z0-9_~.+/=-]{1,256}$'
LOG_LEVEL_RE='^(fatal|error|warn|info|debug|trace|silent)$'

die() { echo "install.sh: $*" >&2; exit 1; }
usage() { echo "install.sh: $*" >&2; echo "usage: install.sh --relay HOST:PORT (--ca-fingerprint HEX | --ca-file PEM) --name NAME [--enroll-key-file FILE|-] [--service NAME=tcp:HOST:PORT]... [--log-level LEVEL] [--no-start] [--config-only] [DEB]" >&2; exit 2; }

relay='' ca_fingerprint='' ca_file='' name='' enroll_key_file='' log_level='' deb=''
start=1 install=1
services=()

while [ $# -gt 0 ]; do
	case "$1" in
	--relay) [ $# -ge 2 ] || usage "$1 needs a value"; relay=$2; shift 2 ;;
	--ca-fingerprint) [ $# -ge 2 ] || usage "$1 needs a value"; ca_fingerprint=$2; shift 2 ;;
	--ca-file) [ $# -ge 2 ] || usage "$1 needs a value"; ca_file=$2; shift 2 ;;
	--name) [ $# -ge 2 ] || usage "$1 needs a value"; name=$2; shift 2 ;;
	--enroll-key-file) [ $# -ge 2 ] || usage "$1 needs a value"; enroll_key_file=$2; shift 2 ;;
	--enroll-key | --enroll-key=*) usage "--enroll-key is not accepted on the command line: use --enroll-key-file or PORTWAY_ENROLL_KEY" ;;
	--service) [ $# -ge 2 ] || usage "$1 needs a value"; services+=("$2"); shift 2 ;;
	--log-level) [ $# -ge 2 ] || usage "$1 needs a value"; log_level=$2; shift 2 ;;
	--no-start) start=0; shift ;;
	--config-only) install=0; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	-*) usage "unknown option $1" ;;
	*) [ -z "$deb" ] || usage "only one package may be given"; deb=$1; shift ;;
	esac
done

# ---- validate everything before changing anything ----
enroll_key=${PORTWAY_ENROLL_KEY:-}
if [ -n "$enroll_key_file" ]; then
	if [ "$enroll_key_file" = - ]; then
		IFS= read -r enroll_key || [ -n "$enroll_key" ] || usage "no enrollment key on stdin"
	else
		[ -r "$enroll_key_file" ] || usage "cannot read $enroll_key_file"
		IFS= read -r enroll_key <"$enroll_key_file" || [ -n "$enroll_key" ] || usage "$enroll_key_file is empty"
	fi
fi

write_config=0
if [ -n "$relay" ]; then
	write_config=1
	[[ $relay =~ $HOST_PORT_RE ]] || usage "--relay must be HOST:PORT (got '$relay')"
	[ -n "$name" ] || usage "--name is required with --relay"
	[[ $name =~ $NAME_RE ]] || usage "--name must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
	if [ -n "$ca_fingerprint" ] && [ -n "$ca_file" ]; then usage "give --ca-fingerprint or --ca-file, not both"; fi
	if [ -n "$ca_fingerprint" ]; then
		# Accept the fingerprint as printed by `portway relay ca --fingerprint`, or with colons, in any case.
		ca_fingerprint=$(printf '%s' "$ca_fingerprint" | tr -d ':' | tr 'A-F' 'a-f')
		[[ $ca_fingerprint =~ ^[0-9a-f]{64}$ ]] || usage "--ca-fingerprint must be a SHA-256 fingerprint (64 hex digits)"
	elif [ -n "$ca_file" ]; then
		[[ $ca_file == /* ]] || usage "--ca-file must be an absolute path"
		[[ $ca_file =~ ^[A-Za-z0-9._/-]+$ ]] || usage "--ca-file: use a path of letters, digits, '.', '_', '-' and '/'"
		[ -r "$ca_file" ] || usage "cannot read $ca_file"
	else
		usage "--ca-fingerprint or --ca-file is required with --relay"
	fi
	if [ -n "$enroll_key" ]; then
		[[ $enroll_key =~ $ENROLL_KEY_RE ]] || usage "the enrollment key has characters an enrollment key never has"
	fi
	if [ -n "$log_level" ]; then
		[[ $log_level =~ $LOG_LEVEL_RE ]] || usage "--log-level must be one of fatal, error, warn, info, debug, trace, silent"
	fi
	declare -A seen=()
	for s in "${services[@]}"; do
		[[ $s =~ ^([^=]+)=tcp:(.+)$ ]] || usage "--service must be NAME=tcp:HOST:PORT (got '$s')"
		service_name=${BASH_REMATCH[1]} service_target=${BASH_REMATCH[2]}
		[[ $service_name =~ $NAME_RE ]] || usage "service name '$service_name' is not valid"
		[[ $service_target =~ $HOST_PORT_RE ]] || usage "service target '$service_target' must be HOST:PORT"
		[ -z "${seen[$service_name]:-}" ] || usage "service $service_name given twice"
		seen[$service_name]=1
	done
elif [ -n "$name$ca_fingerprint$ca_file$enroll_key_file$log_level" ] || [ ${#services[@]} -gt 0 ]; then
	usage "the config flags need --relay"
elif [ "$install" -eq 0 ]; then
	usage "--config-only needs --relay and the other config flags"
fi

if [ "$install" -eq 1 ] && [ -z "$deb" ]; then
	arch=$(dpkg --print-architecture)
	here=$(cd "$(dirname "$0")" && pwd)
	for dir in "$PWD" "$here"; do
		for candidate in "$dir"/portway-agent_*_"$arch".deb; do
			[ -e "$candidate" ] && deb=$candidate
		done
		[ -n "$deb" ] && break
	done
	[ -n "$deb" ] || usage "no portway-agent_*_$arch.deb in $PWD or $here: name the package"
fi
if [ "$install" -eq 1 ]; then
	[ -r "$deb" ] || usage "cannot read $deb"
	deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
fi

[ "$(id -u)" -eq 0 ] || die "run as root (sudo)"

# ---- install ----
if [ "$install" -eq 1 ]; then
	echo "install.sh: installing $deb"
	# confold: an agent.json changed on this machine is kept without a question.
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$deb"
fi
getent passwd portway >/dev/null || die "the package did not create the user portway"

# ---- config ----
json_services() {
	local sep='' s
	printf '['
	for s in "${services[@]}"; do
		printf '%s\n    { "name": "%s", "type": "tcp", "target": "%s" }' "$sep" "${s%%=*}" "${s#*=tcp:}"
		sep=','
	done
	if [ ${#services[@]} -gt 0 ]; then printf '\n  '; fi
	printf ']'
}

if [ "$write_config" -eq 1 ]; then
	umask 077
	mkdir -p "$CONFIG_DIR"
	tmp=$(mktemp "$CONFIG_DIR/.agent.json.XXXXXX")
	trap 'rm -f "$tmp"' EXIT
	{
		printf '{\n'
		printf '  "relay": "%s",\n' "$relay"
		if [ -n "$ca_fingerprint" ]; then printf '  "caFingerprint": "%s",\n' "$ca_fingerprint"; fi
		if [ -n "$ca_file" ]; then printf '  "caFile": "%s",\n' "$ca_file"; fi
		if [ -n "$enroll_key" ]; then printf '  "enrollKey": "%s",\n' "$enroll_key"; fi
		printf '  "name": "%s",\n' "$name"
		printf '  "stateDir": "/var/lib/portway",\n'
		if [ -n "$log_level" ]; then printf '  "logLevel": "%s",\n' "$log_level"; fi
		printf '  "services": %s\n' "$(json_services)"
		printf '}\n'
	} >"$tmp"
	chown root:portway "$tmp"
	chmod 0640 "$tmp"
	mv -f "$tmp" "$CONFIG"
	trap - EXIT
	echo "install.sh: wrote $CONFIG"
fi

# ---- start ----
if [ "$start" -eq 1 ]; then
	if [ -d /run/systemd/system ]; then
		systemctl enable "$UNIT" >/dev/null 2>&1 || true
		systemctl restart "$UNIT"
		echo "install.sh: $UNIT restarted; follow it with: journalctl -u portway-agent -f"
	else
		echo "install.sh: systemd is not running here; $UNIT starts at the next boot"
	fi
fi
