# SPDX-License-Identifier: Apache-2.0
#
# fish completion for ztnactl

function __ztnactl_words
    # The object and verb typed so far (at most two words), skipping options and their values.
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l words
    set -l skip 0
    for t in $tokens
        if test $skip -eq 1
            set skip 0
        else if contains -- $t --role --id --network --group --ttl --output --reason
            set skip 1
        else if not string match -q -- '-*' $t
            set -a words $t
        end
    end
    set -q words[1]; and printf '%s\n' $words[1..2]
end

function __ztnactl_needs_object
    set -l w (__ztnactl_words)
    test (count $w) -eq 0
end

function __ztnactl_needs_verb -a object
    set -l w (__ztnactl_words)
    test (count $w) -eq 1; and test "$w[1]" = "$object"
end

function __ztnactl_using -a object verb
    set -l w (__ztnactl_words)
    test (count $w) -ge 2; and test "$w[1]" = "$object"; and test "$w[2]" = "$verb"
end

function __ztnactl_tokens
    ztnactl --no-legend --no-ask-password token list 2>/dev/null | while read -l id role state rest
        test "$state" = active; and printf '%s\t%s token\n' $id $role
    end
end

function __ztnactl_agents
    ztnactl --no-legend --no-ask-password agents list 2>/dev/null | while read -l spiffe_id agent_status rest
        test "$agent_status" != revoked; and printf '%s\t%s\n' $spiffe_id $agent_status
    end
end

complete -c ztnactl -f

complete -c ztnactl -s h -l help -d 'Show help'
complete -c ztnactl -l version -d 'Show the version'
complete -c ztnactl -l json -d 'Output JSON'
complete -c ztnactl -l no-legend -d 'Omit headers, footers and hints'
complete -c ztnactl -l no-ask-password -d 'Do not ask for a password to authorize'
complete -c ztnactl -l user -d 'Talk to the agents of the session bus'

complete -c ztnactl -n __ztnactl_needs_object -a token -d 'Enrollment tokens'
complete -c ztnactl -n __ztnactl_needs_object -a agents -d 'Enrolled agents'
complete -c ztnactl -n __ztnactl_needs_object -a ca -d 'The certificate authority'
complete -c ztnactl -n __ztnactl_needs_object -a status -d 'Show the state of the agents on this host'
complete -c ztnactl -n __ztnactl_needs_object -a health -d 'Tell whether the agents on this host are online'

complete -c ztnactl -n '__ztnactl_needs_verb token' -a create -d 'Create a one-time enrollment token'
complete -c ztnactl -n '__ztnactl_needs_verb token' -a list -d 'List tokens'
complete -c ztnactl -n '__ztnactl_needs_verb token' -a revoke -d 'Revoke an unused token'
complete -c ztnactl -n '__ztnactl_needs_verb agents' -a list -d 'List enrolled agents'
complete -c ztnactl -n '__ztnactl_needs_verb agents' -a revoke -d 'Revoke an agent'
complete -c ztnactl -n '__ztnactl_needs_verb agents' -a renew -d 'Ask an agent to renew its certificate now'
complete -c ztnactl -n '__ztnactl_needs_verb ca' -a status -d 'Show the controller and its CAs'
complete -c ztnactl -n '__ztnactl_needs_verb ca' -a rotate -d 'Start a staged root CA rotation'
for c in status health
    complete -c ztnactl -n "__ztnactl_needs_verb $c" -a connector -d ztna-connector
    complete -c ztnactl -n "__ztnactl_needs_verb $c" -a tunneler -d ztna-tunneler
end

complete -c ztnactl -n '__ztnactl_using token create' -l role -x -a 'connector tunneler' -d 'Agent role'
complete -c ztnactl -n '__ztnactl_using token create' -l id -x -d 'Bind the token to this agent id'
complete -c ztnactl -n '__ztnactl_using token create' -l network -x -d 'Remote network a connector joins'
complete -c ztnactl -n '__ztnactl_using token create' -l group -x -d 'Group a tunneler joins (repeatable)'
complete -c ztnactl -n '__ztnactl_using token create' -l ttl -x -a '10min 30min 1h 2h 12h 1d 7d' -d 'Token lifetime'
complete -c ztnactl -n '__ztnactl_using token create' -l output -r -F -d 'Write the token to a new file'
complete -c ztnactl -n '__ztnactl_using token revoke' -a '(__ztnactl_tokens)'
complete -c ztnactl -n '__ztnactl_using agents list' -l role -x -a 'connector tunneler' -d 'Only this role'
complete -c ztnactl -n '__ztnactl_using agents revoke' -l reason -x -d 'Why the agent is revoked'
complete -c ztnactl -n '__ztnactl_using agents revoke' -a '(__ztnactl_agents)'
complete -c ztnactl -n '__ztnactl_using agents renew' -a '(__ztnactl_agents)'
