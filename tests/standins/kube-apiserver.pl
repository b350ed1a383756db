#!/usr/bin/perl
# STAND-IN for kube-apiserver (tests/k8s_e2e.rs only; not Kubernetes). Plain HTTP on
# :6443. State in files under $S: tokens, nodes, objects, pods. See README.md.
use strict;
use warnings;
use IO::Socket::INET;

my $S = $ENV{STANDIN_STATE} || '/var/lib/kube-standin/apiserver';
mkdir $S; mkdir "$S/nodes"; mkdir "$S/pods"; mkdir "$S/logs"; mkdir "$S/cordoned";
my $srv = IO::Socket::INET->new(LocalPort => 6443, Listen => 16, ReuseAddr => 1, Proto => 'tcp')
    or die "kube-apiserver stand-in: cannot listen on :6443: $!\n";
$SIG{PIPE} = 'IGNORE';

sub slurp { my ($f) = @_; open(my $h, '<', $f) or return ''; local $/; my $t = <$h>; close $h; return $t; }
sub spit { my ($f, $t) = @_; open(my $h, '>', "$f.tmp") or die "$f: $!"; print $h $t; close $h; rename "$f.tmp", $f; }
sub form { my %f; for (split /&/, $_[0]) { my ($k, $v) = split /=/, $_, 2; $v //= ''; $v =~ s/\+/ /g; $v =~ s/%([0-9A-Fa-f]{2})/chr(hex($1))/ge; $f{$k} = $v; } return %f; }
sub master { my $m = slurp("$S/control-plane"); chomp $m; return $m; }

# Tokens: "token expiry-epoch(0 = never) description" per line.
sub token_ok {
    my ($t) = @_;
    for (split /\n/, slurp("$S/tokens")) {
        my ($tok, $exp) = split / /;
        return 1 if defined $tok && $tok eq $t && ($exp == 0 || $exp > time);
    }
    return 0;
}

sub nodes {
    my @out;
    opendir(my $d, "$S/nodes") or return @out;
    for my $n (sort grep { !/^\./ } readdir $d) {
        my ($ready, $version, $seen) = split / /, slurp("$S/nodes/$n");
        my $st = ($ready eq '1' && time - $seen < 30) ? 'Ready' : 'NotReady';
        $st .= ',SchedulingDisabled' if -e "$S/cordoned/$n";
        push @out, [$n, $st, $n eq master() ? 'control-plane' : '<none>', $version];
    }
    return @out;
}

# Documents of a manifest: [kind, namespace, name, nodeName, command, network, image, pull policy].
sub docs {
    my @out;
    for my $d (split /^---.*$/m, $_[0]) {
        my ($kind) = $d =~ /^kind:\s*(\S+)/m or next;
        my ($meta) = $d =~ /^metadata:\n((?:[ \t]+.*\n?)*)/m;
        $meta //= '';
        my ($name) = $meta =~ /^  name:\s*(\S+)/m;
        next unless defined $name;
        my ($ns) = $meta =~ /^  namespace:\s*(\S+)/m;
        $ns = '' if $kind =~ /^(Namespace|ClusterRole|ClusterRoleBinding|PodSecurityPolicy|CustomResourceDefinition)$/;
        $ns //= 'default';
        my ($node) = $d =~ /^\s+nodeName:\s*(\S+)/m;
        my ($cmd) = $d =~ /^\s+command:\s*\[.*"([^"]*)"\s*\]/m;
        my ($net) = $d =~ /"Network":\s*"([^"]+)"/;
        my ($image) = $d =~ /^\s+image:\s*(\S+)/m;
        # The API server's defaulting (pkg/apis/core/v1/defaults.go): Always for an image
        # without a tag or tagged :latest, IfNotPresent otherwise.
        my ($pull) = $d =~ /^\s+imagePullPolicy:\s*(\S+)/m;
        if (!defined $pull && defined $image) {
            my $last = (split m{/}, $image)[-1];
            $pull = ($image =~ /@/ || ($last =~ /:(.+)$/ && $1 ne 'latest')) ? 'IfNotPresent' : 'Always';
        }
        push @out, [$kind, $ns, $name, $node // '', $cmd // '', $net // '', $image // '', $pull // ''];
    }
    return @out;
}

sub objects { return map { [split / /] } grep { length } split /\n/, slurp("$S/objects"); }

sub apply {
    my ($body) = @_;
    my @have = objects();
    my $resp = '';
    # Validation first (pkg/apis/core/validation): nothing is applied from an invalid manifest.
    for my $d (docs($body)) {
        my ($kind, $name, $pull) = @$d[0, 2, 7];
        return (422, "The Pod \"$name\" is invalid: spec.containers[0].imagePullPolicy: Unsupported value: \"$pull\": supported values: \"Always\", \"IfNotPresent\", \"Never\"\n")
            if $kind eq 'Pod' && $pull !~ /^(Always|IfNotPresent|Never)$/;
    }
    for my $d (docs($body)) {
        my ($kind, $ns, $name, $node, $cmd, $net, $image, $pull) = @$d;
        my $key = "$kind $ns $name";
        my $known = grep { join(' ', @$_) eq $key } @have;
        if (!$known) {
            open(my $h, '>>', "$S/objects"); print $h "$key\n"; close $h;
            push @have, [$kind, $ns, $name];
        }
        spit("$S/cni", "$net\n") if $net ne '';
        if ($kind eq 'Pod' && !-e "$S/pods/$ns.$name") {
            spit("$S/pods/$ns.$name", "node=$node\nphase=Pending\nimage=$image\npull=$pull\ncmd=$cmd\n");
        }
        $resp .= lc($kind) . "/$name " . ($known ? 'unchanged' : 'created') . "\n";
    }
    return (200, $resp);
}

sub pod {
    my ($ns, $name) = @_;
    my %p = map { split /=/, $_, 2 } grep { /=/ } split /\n/, slurp("$S/pods/$ns.$name");
    return %p;
}

# System pods the way `kubectl get pods` would show them once each part runs.
sub pods {
    my ($want) = @_;
    my @out;
    my $m = master();
    my $cni = -e "$S/cni";
    my %ready = map { $_->[0] => $_->[1] eq 'Ready' } nodes();
    if ($want eq '' || $want eq 'kube-system') {
        push @out, ["kube-system", "$_-$m", 'Running', $m] for qw(etcd kube-apiserver kube-controller-manager kube-scheduler);
        push @out, ["kube-system", "coredns-565d847f94-$_", $cni ? 'Running' : 'Pending', $m] for qw(a1b2c d3e4f);
        push @out, ["kube-system", "kube-proxy-$_", 'Running', $_] for sort keys %ready;
    }
    if ($cni && ($want eq '' || $want eq 'kube-flannel')) {
        push @out, ["kube-flannel", "kube-flannel-ds-$_", $ready{$_} ? 'Running' : 'Init:0/2', $_] for sort keys %ready;
    }
    opendir(my $d, "$S/pods");
    for my $f (sort grep { !/^\./ } readdir $d) {
        my ($ns, $name) = split /\./, $f, 2;
        next if $want ne '' && $want ne $ns;
        my %p = pod($ns, $name);
        # kubectl's STATUS column: a waiting container's reason (ErrImageNeverPull, ...) if any.
        my $st = $p{phase} eq 'Succeeded' ? 'Completed' : ($p{reason} || $p{phase});
        push @out, [$ns, $name, $st, $p{node}];
    }
    return @out;
}

sub handle {
    my ($method, $path, $body) = @_;
    my ($p, $q) = split /\?/, $path, 2;
    my %q = form($q // '');
    my %f = form($body);
    return (200, "ok\n") if $p eq '/healthz';
    # cluster-info carries a JWS signature per bootstrap token: a token it has none for
    # cannot discover the cluster (kubeadm join fails there, before writing anything).
    if ($p eq '/cluster-info') {
        return (403, "no JWS signature for token ID \"" . substr($q{token} // '', 0, 6) . "\"\n")
            if defined $q{token} && !token_ok($q{token});
        return (200, slurp('/etc/kubernetes/pki/ca.crt'));
    }
    # The server that cluster-info's kubeconfig names (kubeadm init's endpoint) and the
    # kubelet-config ConfigMap (init's KubeletConfiguration): what kubeadm join uses.
    return (200, slurp("$S/endpoint")) if $p eq '/cluster-info-server';
    return (200, slurp("$S/kubelet-config")) if $p eq '/kubelet-config';
    if ($p eq '/join' && $method eq 'POST') {
        return (403, "token rejected: unknown or expired bootstrap token ID \"" . substr($f{token} // '', 0, 6) . "\"\n")
            unless token_ok($f{token} // '');
        open(my $h, '>>', "$S/joined"); print $h "$f{node} " . substr($f{token}, 0, 6) . " " . time . "\n"; close $h;
        return (200, "ok\n");
    }
    if ($p eq '/heartbeat' && $method eq 'POST') {
        my $n = $f{node} // return (400, "no node\n");
        spit("$S/nodes/$n", ($f{ready} // 0) . " " . ($f{version} // '?') . " " . time);
        my $r = '';
        my $cni = slurp("$S/cni"); chomp $cni;
        $r .= "cni $cni\n" if $cni ne '';
        opendir(my $d, "$S/pods");
        for my $pf (sort grep { !/^\./ } readdir $d) {
            my ($ns, $name) = split /\./, $pf, 2;
            my %pp = pod($ns, $name);
            $r .= "pod $ns $name $pp{image} $pp{pull} $pp{cmd}\n" if $pp{node} eq $n && $pp{phase} eq 'Pending' && $f{ready};
        }
        return (200, $r);
    }
    if ($p eq '/podstatus' && $method eq 'POST') {
        # A pod still Pending (its image cannot be had) keeps its spec and gets the reason.
        my %pp = pod($f{ns}, $f{name});
        if ($f{phase} eq 'Pending') {
            spit("$S/pods/$f{ns}.$f{name}", join('', map { "$_=" . ($pp{$_} // '') . "\n" } qw(node phase image pull cmd)) . "reason=" . ($f{reason} // '') . "\n");
            return (200, "ok\n");
        }
        # The log in a file of its own: it has many lines (and '=' in them).
        spit("$S/logs/$f{ns}.$f{name}", $f{log});
        spit("$S/pods/$f{ns}.$f{name}", "node=$f{node}\nphase=$f{phase}\nimage=\npull=\ncmd=\n");
        return (200, "ok\n");
    }
    if ($p eq '/nodes') {
        my @n = grep { !defined $q{name} || $q{name} eq '' || $_->[0] eq $q{name} } nodes();
        return (404, "Error from server (NotFound): nodes \"$q{name}\" not found\n") if !@n && ($q{name} // '') ne '';
        return (200, join('', map { join(' ', @$_) . "\n" } @n));
    }
    # Cordon, uncordon and drain (kubectl's drain.go: cordon, then evict every pod on the node
    # but mirror pods; DaemonSet pods need --ignore-daemonsets, pods without a controller need
    # --force). Each call is appended to $S/calls, in order, for the test.
    if ($p =~ m{^/(cordon|uncordon|drain)$} && $method eq 'POST') {
        my ($verb, $n) = ($1, $q{node} // '');
        return (404, "Error from server (NotFound): nodes \"$n\" not found\n") unless -e "$S/nodes/$n";
        open(my $h, '>>', "$S/calls"); print $h "$verb $n\n"; close $h;
        if ($verb eq 'cordon') {
            my $had = -e "$S/cordoned/$n";
            spit("$S/cordoned/$n", time);
            return (200, $had ? "node/$n already cordoned\n" : "node/$n cordoned\n");
        }
        if ($verb eq 'uncordon') {
            my $had = -e "$S/cordoned/$n";
            unlink "$S/cordoned/$n";
            return (200, $had ? "node/$n uncordoned\n" : "node/$n already uncordoned\n");
        }
        my @on = grep { $_->[3] eq $n } pods('');
        my @ds = grep { $_->[1] =~ /^kube-(proxy|flannel-ds)-/ } @on;
        my @bare = grep { $_->[1] !~ /^kube-(proxy|flannel-ds)-/ && $_->[2] ne 'Completed' } @on;
        # The messages of drain/filters.go (v1.25): "cannot delete " + each fatal filter's text.
        my @err;
        push @err, "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): " . join(', ', map { "$_->[0]/$_->[1]" } @ds) if @ds && !$q{ignore_daemonsets};
        push @err, "cannot delete cannot delete Pods that declare no controller (use --force to override): " . join(', ', map { "$_->[0]/$_->[1]" } @bare) if @bare && !$q{force};
        my $errs = @err > 1 ? '[' . join(', ', @err) . ']' : ($err[0] // '');
        return (400, "error: unable to drain node \"$n\" due to error: $errs, continuing command...\nThere are pending nodes to be drained:\n $n\n" . join("\n", @err) . "\n") if @err;
        my $r = "";
        $r .= "Warning: ignoring DaemonSet-managed Pods: " . join(', ', map { "$_->[0]/$_->[1]" } @ds) . "\n" if @ds;
        for my $b (@bare) { unlink "$S/pods/$b->[0].$b->[1]"; $r .= "pod/$b->[1] evicted\n"; }
        return (200, $r . "node/$n drained\n");
    }
    return (200, join('', map { join(' ', @$_) . "\n" } pods($q{ns} // ''))) if $p eq '/pods';
    if ($p eq '/pod') {
        return (404, "Error from server (NotFound): pods \"$q{name}\" not found\n") unless -e "$S/pods/$q{ns}.$q{name}";
        my %pp = pod($q{ns}, $q{name});
        my $log = slurp("$S/logs/$q{ns}.$q{name}");
        $log .= "\n" if $log ne '' && $log !~ /\n\z/;
        return (200, "$pp{phase}\n$log");
    }
    return apply($body) if $p eq '/apply' && $method eq 'POST';
    if ($p eq '/get' && $method eq 'POST') {
        my @have = map { join(' ', @$_) } objects();
        for my $d (docs($body)) {
            my $key = "$d->[0] $d->[1] $d->[2]";
            return (404, "Error from server (NotFound): " . lc($d->[0]) . " \"$d->[2]\" not found\n") unless grep { $_ eq $key } @have;
        }
        return (200, join('', map { lc($_->[0]) . "/$_->[2]\n" } docs($body)));
    }
    return (404, "not found: $method $p\n");
}

while (my $c = $srv->accept) {
    my $line = <$c> // next;
    my ($method, $path) = split / /, $line;
    my $len = 0;
    while (my $h = <$c>) {
        last if $h =~ /^\r?\n$/;
        $len = $1 if $h =~ /^Content-Length:\s*(\d+)/i;
    }
    my $body = '';
    read($c, $body, $len) if $len > 0;
    my ($code, $text) = eval { handle($method, $path, $body) };
    ($code, $text) = (500, "stand-in error: $@") unless defined $code;
    print $c "HTTP/1.0 $code X\r\nContent-Type: text/plain\r\nContent-Length: " . length($text) . "\r\n\r\n$text";
    close $c;
}
