# SPDX-License-Identifier: Apache-2.0
#
# fish completion for ztna-connector. ztna-connector and ztna-tunneler take the same commands and options:
# their completion files differ only in the command they are for.

set -l cmd ztna-connector

function __ztna_agent_command
    # The command typed so far (enroll or run), skipping options and their values.
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l skip 0
    for t in $tokens
        if test $skip -eq 1
            set skip 0
        else if contains -- $t --confdir --state-dir --kek-file --token-file --id --trust-domain --ca-file \
                --label --key-type --controller --health-listen
            set skip 1
        else if not string match -q -- '-*' $t
            echo $t
            return 0
        end
    end
    return 1
end

function __ztna_agent_needs_command
    not __ztna_agent_command >/dev/null
end

# Before the command, or with the command given.
function __ztna_agent_may_be -a command
    set -l c (__ztna_agent_command); or return 0
    test "$c" = $command
end

set -l enroll '__ztna_agent_may_be enroll'
set -l run '__ztna_agent_may_be run'

complete -c $cmd -f

complete -c $cmd -s h -l help -d 'Show help'
complete -c $cmd -l version -d 'Show the version'
complete -c $cmd -l confdir -x -a '(__fish_complete_directories)' -d 'Read the configuration from DIR'
complete -c $cmd -l state-dir -x -a '(__fish_complete_directories)' -d 'Keep the identity in DIR'
complete -c $cmd -l kek-file -r -F -d 'Key-encryption key file when there is no ztna.kek credential'

complete -c $cmd -n __ztna_agent_needs_command -a enroll \
    -d 'Enroll with a token, save the identity, print the SPIFFE ID'
complete -c $cmd -n __ztna_agent_needs_command -a run -d 'Run the daemon'

complete -c $cmd -n $enroll -l token-file -r -F -a - -d 'Read the token from FILE, or from stdin with -'
complete -c $cmd -n $enroll -l id -x -d 'Agent id'
complete -c $cmd -n $enroll -l trust-domain -x -d 'Refuse a controller of another trust domain'
complete -c $cmd -n $enroll -l ca-file -r -F -d "Trust this PEM root instead of the token's CA pin"
complete -c $cmd -n $enroll -l label -x -d 'Label sent at enrollment (KEY=VALUE, repeatable)'
complete -c $cmd -n $enroll -l key-type -x -a 'ecdsa-p256 ed25519' -d 'Type of the key to generate'
complete -c $cmd -n $enroll -l force -d 'Replace an existing or unreadable identity'

complete -c $cmd -n $run -l controller -x -d "Dial this controller instead of the identity's"
complete -c $cmd -n $run -l health-listen -x -d 'Loopback address for /healthz and /readyz'
complete -c $cmd -n $run -l user -d 'Use the session bus (desktop)'
