# Shared by the guest scenarios (sourced).
# `check NAME STATUS`: the guest's report line; FAILED remembers that one failed.
FAILED=
check() { if [ "$2" = 0 ]; then echo "VM-CHECK $1 PASS"; else echo "VM-CHECK $1 FAIL"; FAILED=1; fi; }
# `until_true N CMD...`: run CMD every 0.1 s until it succeeds, at most N times.
until_true() {
  n=$1; shift
  for i in $(seq "$n"); do "$@" && return 0; sleep 0.1; done
  return 1
}
# ipvsadm 1.31 adds the default `--tun-type ipip` (kernel >= 5.2); hbd writes what older
# ipvsadm-restore also reads.
saved() { ipvsadm -Sn | sed 's/ --tun-type ipip$//' | sort; }
# ipvsadm-save leaves thresholds out (ipvsadm -Ln --thresholds shows them); hbd writes them.
unthreshold() { sed 's/ -x [0-9]* -y [0-9]*$//'; }
# iproute2's ip (`ip netns`): busybox's shell would run its own applet for a bare `ip`.
ip() { /usr/sbin/ip "$@"; }
