#!/bin/sh
# /init of the Linux test guest, built by xtask (xtask/src/linux.rs) into a newc
# initramfs beside a static busybox. It prints the marker line xtask waits for (kernel,
# memory, CPU count), the interrupt counts, runs the memory workload and, when the
# hypervisor offers one on the command line, the doorbell/remap check; then the result,
# and powers off. Every line it prints starts with "hvcore-linux: ". Upper-case words
# between at signs are filled in by xtask.
#
# The lines go through the kernel's log (/dev/kmsg at level 2, which `quiet` still
# prints), not the tty: the console driver writes them out before the write returns,
# so the marker line is out when /init goes on (xtask times it) and nothing is lost
# at power-off. A UART without an interrupt (the hypervisor gives the guest none)
# drains the tty only from a poll timer, 16 bytes at a time. The kernel line carries
# `printk.devkmsg=on` so these writes are not rate-limited.
/bin/busybox mkdir -p /proc /sys /dev /tmp /mnt /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

failed=0
say() { echo "<2>hvcore-linux: $*" >/dev/kmsg; }
fail() {
    say "FAIL: $*"
    failed=$((failed + 1))
}
# The value of NAME=VALUE on the kernel command line.
arg() {
    for w in $(cat /proc/cmdline); do
        case "$w" in "$1="*)
            echo "${w#*=}"
            return
            ;;
        esac
    done
}
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk "BEGIN { printf \"%.2f\", $2 - $1 }"; }

cpus=$(grep -c '^processor' /proc/cpuinfo)
mem=$(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)
say "@MARKER@ $(uname -a); MemTotal: $mem kB; CPUs: $cpus"
say "uptime at the marker: $(now) s"
say "/proc/interrupts:"
while IFS= read -r line; do say "  $line"; done </proc/interrupts

# The memory workload: @COPIES@ copies of /pattern (@MIB@ MiB) written to a tmpfs by
# cat, then read back through md5sum and compared with the checksum xtask computed on
# the host. The pattern's length is odd, so every page of the file holds different
# bytes: a page lost or mapped at the wrong place changes the checksum.
mkdir -p /mnt/work
if mount -t tmpfs -o size=@TMPFS_MIB@m tmpfs /mnt/work; then
    set --
    i=0
    while [ $i -lt @COPIES@ ]; do
        set -- "$@" /pattern
        i=$((i + 1))
    done
    t0=$(now)
    cat "$@" >/mnt/work/data
    t1=$(now)
    sum=$(md5sum /mnt/work/data | cut -d' ' -f1)
    t2=$(now)
    size=$(stat -c %s /mnt/work/data)
    if [ "$size" = @BYTES@ ] && [ "$sum" = @MD5@ ]; then
        say "workload: ok: wrote @MIB@ MiB to tmpfs in $(since "$t0" "$t1") s, read it back with md5sum in $(since "$t1" "$t2") s, md5 $sum"
    else
        fail "workload: wrote $size of @BYTES@ bytes, md5 $sum, expected @MD5@"
    fi
    rm -f /mnt/work/data
    umount /mnt/work
else
    fail "workload: cannot mount a tmpfs of @TMPFS_MIB@ MiB"
fi

# The doorbell check: the hypervisor keeps the range at hvcore.probe out of the
# guest's RAM (reserved-memory, no-map). Both CPUs read its first word; then, while
# CPU 1 keeps reading it, CPU 0 rings the doorbell register at hvcore.doorbell and the
# hypervisor unmaps the range and maps new frames with new contents there. Both CPUs
# must then read the new word; each reports what it read to the device (offset 8).
db=$(arg hvcore.doorbell)
probe=$(arg hvcore.probe)
if [ -z "$db" ] || [ -z "$probe" ]; then
    say "doorbell: skipped (no hvcore.doorbell= and hvcore.probe= on the command line)"
elif [ "$cpus" -lt 2 ]; then
    fail "doorbell: needs 2 CPUs, the guest has $cpus"
else
    before0=$(taskset -c 0 devmem "$probe" 64)
    before1=$(taskset -c 1 devmem "$probe" 64)
    taskset -c 1 sh -c "while :; do devmem $probe 64 >/dev/null; done" &
    reader=$!
    usleep 200000
    taskset -c 0 devmem "$db" 64 1
    after0=$(taskset -c 0 devmem "$probe" 64)
    after1=$(taskset -c 1 devmem "$probe" 64)
    kill "$reader"
    wait "$reader" 2>/dev/null
    taskset -c 0 devmem $((db + 8)) 64 "$after0" >/dev/null
    taskset -c 1 devmem $((db + 8)) 64 "$after1" >/dev/null
    seen="before the remap CPU 0 read $before0, CPU 1 $before1; after it CPU 0 read $after0, CPU 1 $after1"
    if [ -n "$before0" ] && [ "$before0" = "$before1" ] && [ -n "$after0" ] &&
        [ "$after0" = "$after1" ] && [ "$after0" != "$before0" ]; then
        say "doorbell: ok: $seen"
    else
        fail "doorbell: $seen"
    fi
fi

if [ "$failed" -eq 0 ]; then
    say "result: ok"
else
    say "result: FAIL ($failed failed)"
fi
say "powering off"
poweroff -f
sleep 5
say "FAIL: poweroff returned"
