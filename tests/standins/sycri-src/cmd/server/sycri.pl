#!/usr/bin/perl
# STAND-IN for the sycri daemon of sylabs/singularity-cri v1.0.0-beta.7 (tests/k8s_e2e.rs
# only; runs no container). Modelled on cmd/server/main.go and config.go: Go's flag
# package (-config / --config, default /usr/local/etc/sycri/sycri.yaml; an unknown flag
# is "flag provided but not defined", exit 2; `sycri version`), and the configuration
# read with gopkg.in/yaml.v2's Decoder, which is lenient: unknown keys are ignored, an
# empty value is "", a missing file means the defaults (with a warning); then
# listenSocket, storageDir and baseRunDir must be non-empty. It answers HTTP/2 (prior
# knowledge) on listenSocket: each request gets ":status 200".
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

sub serve {
    my ($c) = @_;
    my $pre = readn($c, 24);
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
