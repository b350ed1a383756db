#!/usr/bin/perl
# STAND-IN for the sycri daemon (tests/k8s_e2e.rs only; runs no container). Reads
# sycri.yaml (unknown keys are errors, as in the real one), makes its folders, and answers
# HTTP/2 (prior knowledge) on listenSocket: each request gets ":status 200".
use strict;
use warnings;
use IO::Socket::UNIX;

my $config = '/usr/local/etc/sycri/sycri.yaml';
for (my $i = 0; $i < @ARGV; $i++) {
    if ($ARGV[$i] =~ /^--?config=(.+)$/) { $config = $1; }
    elsif ($ARGV[$i] =~ /^--?config$/) { $config = $ARGV[++$i]; }
    elsif ($ARGV[$i] =~ /^-v$/) { $i++; }
    elsif ($ARGV[$i] =~ /^--?version$/) { print "sycri stand-in 1.0.0-beta.7\n"; exit 0; }
    else { die "flag provided but not defined: $ARGV[$i]\n"; }
}
my %known = map { $_ => 1 } qw(listenSocket storageDir streamingURL cniBinDir cniConfDir baseRunDir trashDir debug);
my %c;
open(my $fh, '<', $config) or die "could not read config $config: $!\n";
while (<$fh>) {
    next if /^\s*(#|$)/;
    /^(\w+):\s*(.*?)\s*$/ or die "$config: cannot parse line $.\n";
    die "$config: unknown field \"$1\"\n" unless $known{$1};
    $c{$1} = $2;
}
close $fh;
for (qw(listenSocket storageDir streamingURL)) { die "$config: $_ is required\n" unless $c{$_}; }
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
