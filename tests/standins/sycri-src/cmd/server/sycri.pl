#!/usr/bin/perl
# STAND-IN for the sycri daemon of sylabs/singularity-cri v1.0.0-beta.7 (tests/k8s_e2e.rs
# only; runs no container). Modelled on cmd/server/main.go and config.go: Go's flag
# package (-config / --config, default /usr/local/etc/sycri/sycri.yaml; an unknown flag
# is "flag provided but not defined", exit 2; `sycri version`), and the configuration
# read with gopkg.in/yaml.v2's Decoder, which is lenient: unknown keys are ignored, an
# empty value is "", a missing file means the defaults (with a warning); then
# listenSocket, storageDir and baseRunDir must be non-empty. It answers HTTP/2 (prior
# knowledge) on listenSocket: each request gets ":status 200".
# Running a pod's container (the kubelet stand-in's one-call "POST /run" on the same socket,
# HTTP/1.1, in place of CRI's PullImage/CreateContainer/StartContainer): the image reference
# is resolved as pkg/image/reference.go (NormalizedImageRef, ParseRef) and image.go (Pull)
# do: "local.file/PATH" is a SIF already on this host (a ":tag" the kubelet adds is cut off;
# the file must open), cloud.sylabs.io/... is the Sylabs library, anything else Docker Hub
# (`singularity build` of docker://). This stand-in pulls nothing over the network: those
# two are refused with the real error's wording and the reason. The container is REAL: the
# host's `singularity exec` of that SIF (the real sycri runs `singularity oci` on a bundle
# made from it, and its command through /.singularity.d/actions/exec, as exec does).
use strict;
use warnings;
use IO::Socket::UNIX;

my $config = '/usr/local/etc/sycri/sycri.yaml';
sub usage { print STDERR "Usage of sycri:\n  -config string\n    \tpath to config file (default \"/usr/local/etc/sycri/sycri.yaml\")\n  -v value\n    \tnumber for the log level verbosity\n"; exit 2; }
if (@ARGV && $ARGV[0] eq 'version') { print "1.0.0-beta.7\n"; exit 0; }
for (my $i = 0; $i < @ARGV; $i++) {
    my $a = $ARGV[$i];
    if ($a =~ /^--?config=(.*)$/) { $config = $1; }
    elsif ($a =~ /^--?config$/) { usage() if $i + 1 >= @ARGV; $config = $ARGV[++$i]; }
    elsif ($a =~ /^--?v=\d+$/) { }
    elsif ($a =~ /^--?v$/) { $i++; }
    elsif ($a =~ /^--?(logtostderr|alsologtostderr)(=.*)?$/) { }
    else { (my $n = $a) =~ s/=.*//; print STDERR "flag provided but not defined: $n\n"; usage(); }
}
my %c;
if (open(my $fh, '<', $config)) {
    while (<$fh>) {
        next if /^\s*(#|$)/;
        if (/^(\w+):\s*(.*?)\s*$/) { $c{$1} = $2; next; }
        die "F Could not parse config: could not decode config: yaml: line $.: mapping values are not allowed in this context\n";
    }
    close $fh;
} else {
    print STDERR "W No config file found, using default\n";
    %c = (listenSocket => '/var/run/singularity.sock', storageDir => '/var/lib/singularity', baseRunDir => '/var/run/singularity');
}
$c{$_} //= '' for qw(listenSocket storageDir streamingURL cniBinDir cniConfDir baseRunDir trashDir);
die "F Could not parse config: socket to serve cannot be empty\n" if $c{listenSocket} eq '';
die "F Could not parse config: directory to pull images cannot be empty\n" if $c{storageDir} eq '';
die "F Could not parse config: directory to run containers cannot be empty\n" if $c{baseRunDir} eq '';
for (qw(storageDir baseRunDir trashDir)) { system('mkdir', '-p', $c{$_}) if $c{$_}; }
unlink $c{listenSocket};
my $srv = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Local => $c{listenSocket}, Listen => 8)
    or die "cannot listen on $c{listenSocket}: $!\n";
print STDERR "sycri stand-in listening on $c{listenSocket} (streaming $c{streamingURL})\n";
$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "client too slow\n" };   # caught per connection

sub frame { my ($type, $flags, $stream, $payload) = @_;
    return substr(pack('N', length $payload), 1, 3) . pack('CCN', $type, $flags, $stream) . $payload; }
sub readn { my ($c, $n) = @_; my $b = ''; while (length $b < $n) { my $r = sysread($c, $b, $n - length $b, length $b); return undef unless $r; } return $b; }

# The SIF a reference names, or the error the real PullImage returns.
sub resolve {
    my ($ref) = @_;
    $ref =~ s{^docker\.io/}{};
    if ($ref =~ m{^local\.file}) {
        my $i = rindex($ref, ':');
        $ref = substr($ref, 0, $i) if $i >= 0;   # "kubernetes will add :latest tag"
        (my $path = $ref) =~ s{^local\.file}{};
        return (undef, "could not pull image: could not fetch local SIF info: could not open sif image: open $path: $!") unless open(my $fh, '<', $path);
        return ($path, undef);
    }
    $ref .= ':latest' if rindex($ref, ':') < 0;
    my $where = $ref =~ m{^cloud\.sylabs\.io} ? 'library' : 'docker';
    return (undef, "could not pull image: could not pull $where image $ref: stand-in: no network pulls here; serve the image as local.file/PATH");
}

sub singularity_exec {
    my ($pre, $flags, @rest) = @_;
    my @cmd = (@$pre, 'singularity', 'exec', @$flags, @rest);
    print STDERR "I sycri stand-in: @cmd\n";
    my $pid = open(my $p, '-|') // die "fork: $!";
    if (!$pid) { open(STDERR, '>&', \*STDOUT); exec(@cmd) or do { print "exec singularity: $!\n"; exit 127; }; }
    local $/; my $o = <$p> // ''; close $p;
    return ($? >> 8, $o);
}

sub run_container {
    my ($c, $first) = @_;
    my $req = $first;
    while (index($req, "\r\n\r\n") < 0) { my $r = sysread($c, $req, 4096, length $req); return unless $r; }
    my ($head, $body) = split /\r\n\r\n/, $req, 2;
    my ($len) = $head =~ /^Content-Length:\s*(\d+)/mi;
    $len //= 0;
    while (length $body < $len) { my $r = sysread($c, $body, $len - length $body, length $body); return unless $r; }
    my %f;
    for (split /&/, $body) { my ($k, $v) = split /=/, $_, 2; $v //= ''; $v =~ s/\+/ /g; $v =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge; $f{$k} = $v; }
    my ($path, $err) = resolve($f{image} // '');
    my $out;
    if (defined $err) {
        $out = "exit 1\n$err\n";
    } else {
        my @env = map { ('--env', $_) } grep { length } split /\n/, $f{env} // '';
        alarm 0;
        my @run = ($path, '/bin/sh', '-c', $f{cmd} // 'true');
        my ($rc, $o) = singularity_exec([], [@env], @run);
        # Root in a container host (systemd-nspawn) lacks capabilities Apptainer asks for as
        # root, or loop devices: then as an unprivileged user (a user namespace, as Slurm
        # jobs run it), said in the journal.
        if ($rc != 0 && $o =~ /capability set|loop device|mount.*squashfs|squashfs.*mount/i) {
            print STDERR "W sycri stand-in: singularity exec as root failed on this host, again as nobody: $o";
            ($rc, $o) = singularity_exec(['runuser', '-u', 'nobody', '--'], [@env, '--no-home'], @run);
        }
        $out = "exit $rc\n$o";
    }
    syswrite($c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " . length($out) . "\r\nConnection: close\r\n\r\n$out");
}

sub serve {
    my ($c) = @_;
    my $pre = readn($c, 24);
    return run_container($c, $pre) if defined $pre && $pre =~ m{^POST /run };
    return unless defined $pre && $pre eq "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    syswrite($c, frame(4, 0, 0, ''));
    while (defined(my $h = readn($c, 9))) {
        my ($l1, $l2, $type, $flags, $stream) = unpack('CnCCN', $h);
        my $len = ($l1 << 16) | $l2;
        my $payload = $len ? readn($c, $len) : '';
        return unless defined $payload;
        if ($type == 4 && !($flags & 1)) { syswrite($c, frame(4, 1, 0, '')); }
        # Answer, then read on until the client hangs up (closing first breaks its pipe).
        if ($type == 1) { syswrite($c, frame(1, 5, $stream & 0x7fffffff, "\x88")); }
    }
}

while (my $c = $srv->accept) {
    eval { alarm 10; serve($c); alarm 0; };
    alarm 0;
    close $c;
}
