# Scenario `bench` (not run by default: HBD_VM_ONLY=bench): the 10,000-real figures on the
# emulated kernel, hbd's IPVS backend (examples/ipvs_bench) beside `ipvsadm -R` restoring the
# same 100 services x 100 reals in the same guest.
. /vm/lib.sh
ipvs_bench
# The same table as ipvsadm-save text.
awk 'BEGIN {
  for (s = 0; s < 100; s++) {
    printf "-A -t 192.0.2.10:%d -s wrr\n", 1000 + s
    for (r = 0; r < 100; r++)
      printf "-a -t 192.0.2.10:%d -r 198.51.100.%d:%d -m -w %d\n", 1000 + s, r % 250 + 1, 2000 + r, 1 + r % 3
  }
}' >/tmp/rules
t0=$(cut -d' ' -f1 /proc/uptime)
ipvsadm -R </tmp/rules
t1=$(cut -d' ' -f1 /proc/uptime)
echo "VM-FIGURE ipvsadm-restore-10000-reals-ms $(echo "($t1 - $t0) * 1000" | bc)"
t0=$(cut -d' ' -f1 /proc/uptime)
ipvsadm -e -t 192.0.2.10:1042 -r 198.51.100.8:2007 -m -w 9
t1=$(cut -d' ' -f1 /proc/uptime)
echo "VM-FIGURE ipvsadm-one-change-ms $(echo "($t1 - $t0) * 1000" | bc)"
ipvsadm -C
