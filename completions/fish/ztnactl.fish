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
        else if contains -- $t --role --id --network --group --ttl --output --reason --description --address \
                --ports --protocol --alias --token-file
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

# Names of networks, resources, groups and admins: the first column of their list (names with spaces are
# skipped).
function __ztnactl_names -a kind
    ztnactl --no-legend --no-ask-password $kind list 2>/dev/null | while read -l name rest
        printf '%s\n' $name
    end
end

function __ztnactl_tunnelers
    ztnactl --no-legend --no-ask-password agents list --role tunneler 2>/dev/null | while read -l spiffe_id agent_status rest
        test "$agent_status" != revoked; and printf '%s\t%s\n' $spiffe_id $agent_status
    end
end

# The number of words after "<object> <verb>", skipping options and their values.
function __ztnactl_n_args
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l n 0
    set -l skip 0
    for t in $tokens
        if test $skip -eq 1
            set skip 0
        else if contains -- $t --role --id --network --group --ttl --output --reason --description --address \
                --ports --protocol --alias --token-file
            set skip 1
        else if not string match -q -- '-*' $t
            set n (math $n + 1)
        end
    end
    math "max(0, $n - 2)"
end

function __ztnactl_arg -a object verb index
    __ztnactl_using $object $verb; and test (__ztnactl_n_args) -eq $index
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
complete -c ztnactl -n __ztnactl_needs_object -a network -d 'Remote networks'
complete -c ztnactl -n __ztnactl_needs_object -a resource -d 'Private resources in remote networks'
complete -c ztnactl -n __ztnactl_needs_object -a group -d 'Groups of tunnelers'
complete -c ztnactl -n __ztnactl_needs_object -a policy -d 'Which group may reach which resource'
complete -c ztnactl -n __ztnactl_needs_object -a admin -d 'Administrators of the API and dashboard'
complete -c ztnactl -n __ztnactl_needs_object -a enroll -d 'Enroll an agent on this host with a token'

complete -c ztnactl -n '__ztnactl_needs_verb token' -a create -d 'Create a one-time enrollment token'
complete -c ztnactl -n '__ztnactl_needs_verb token' -a list -d 'List tokens'
complete -c ztnactl -n '__ztnactl_needs_verb token' -a revoke -d 'Revoke an unused token'
complete -c ztnactl -n '__ztnactl_needs_verb agents' -a list -d 'List enrolled agents'
complete -c ztnactl -n '__ztnactl_needs_verb agents' -a revoke -d 'Revoke an agent'
complete -c ztnactl -n '__ztnactl_needs_verb agents' -a renew -d 'Ask an agent to renew its certificate now'
complete -c ztnactl -n '__ztnactl_needs_verb ca' -a status -d 'Show the controller and its CAs'
complete -c ztnactl -n '__ztnactl_needs_verb ca' -a rotate -d 'Start a staged root CA rotation'
complete -c ztnactl -n '__ztnactl_needs_verb network' -a create -d 'Create a remote network'
complete -c ztnactl -n '__ztnactl_needs_verb network' -a delete -d 'Delete a network'
complete -c ztnactl -n '__ztnactl_needs_verb network' -a list -d 'List networks'
complete -c ztnactl -n '__ztnactl_needs_verb resource' -a create -d 'Create a resource'
complete -c ztnactl -n '__ztnactl_needs_verb resource' -a update -d 'Change a resource'
complete -c ztnactl -n '__ztnactl_needs_verb resource' -a delete -d 'Delete a resource and its policies'
complete -c ztnactl -n '__ztnactl_needs_verb resource' -a list -d 'List resources'
complete -c ztnactl -n '__ztnactl_needs_verb group' -a create -d 'Create a group'
complete -c ztnactl -n '__ztnactl_needs_verb group' -a delete -d 'Delete a group'
complete -c ztnactl -n '__ztnactl_needs_verb group' -a list -d 'List groups'
complete -c ztnactl -n '__ztnactl_needs_verb group' -a add-member -d 'Add a tunneler to a group'
complete -c ztnactl -n '__ztnactl_needs_verb group' -a remove-member -d 'Remove a tunneler from a group'
complete -c ztnactl -n '__ztnactl_needs_verb policy' -a create -d 'Grant a group a resource'
complete -c ztnactl -n '__ztnactl_needs_verb policy' -a delete -d 'Withdraw a grant'
complete -c ztnactl -n '__ztnactl_needs_verb policy' -a list -d 'List policies'
complete -c ztnactl -n '__ztnactl_needs_verb admin' -a create -d 'Create an administrator'
complete -c ztnactl -n '__ztnactl_needs_verb admin' -a delete -d 'Delete an administrator'
complete -c ztnactl -n '__ztnactl_needs_verb admin' -a list -d 'List administrators'
complete -c ztnactl -n '__ztnactl_needs_verb admin' -a passwd -d "Set an administrator's password"
for c in status health enroll
    complete -c ztnactl -n "__ztnactl_needs_verb $c" -a connector -d ztna-connector
    complete -c ztnactl -n "__ztnactl_needs_verb $c" -a tunneler -d ztna-tunneler
end

complete -c ztnactl -n '__ztnactl_using token create' -l role -x -a 'connector tunneler' -d 'Agent role'
complete -c ztnactl -n '__ztnactl_using token create' -l id -x -d 'Bind the token to this agent id'
complete -c ztnactl -n '__ztnactl_using token create' -l network -x -a '(__ztnactl_names network)' \
    -d 'Remote network a connector joins'
complete -c ztnactl -n '__ztnactl_using token create' -l group -x -d 'Group a tunneler joins (repeatable)'
complete -c ztnactl -n '__ztnactl_using token create' -l ttl -x -a '10min 30min 1h 2h 12h 1d 7d' -d 'Token lifetime'
complete -c ztnactl -n '__ztnactl_using token create' -l output -r -F -d 'Write the token to a new file'
complete -c ztnactl -n '__ztnactl_using token revoke' -a '(__ztnactl_tokens)'
complete -c ztnactl -n '__ztnactl_using agents list' -l role -x -a 'connector tunneler' -d 'Only this role'
complete -c ztnactl -n '__ztnactl_using agents revoke' -l reason -x -d 'Why the agent is revoked'
complete -c ztnactl -n '__ztnactl_using agents revoke' -a '(__ztnactl_agents)'
complete -c ztnactl -n '__ztnactl_using agents renew' -a '(__ztnactl_agents)'

complete -c ztnactl -n '__ztnactl_using network create' -l description -x -d 'What the network is for'
complete -c ztnactl -n '__ztnactl_arg network delete 0' -a '(__ztnactl_names network)'
for v in create update
    complete -c ztnactl -n "__ztnactl_using resource $v" -l address -x -d 'FQDN, *.wildcard, IP address or CIDR'
    complete -c ztnactl -n "__ztnactl_using resource $v" -l network -x -a '(__ztnactl_names network)' -d 'Remote network'
    complete -c ztnactl -n "__ztnactl_using resource $v" -l ports -x -a any -d 'Ports and ranges, or any'
    complete -c ztnactl -n "__ztnactl_using resource $v" -l protocol -x -a 'any tcp udp' -d Protocol
    complete -c ztnactl -n "__ztnactl_using resource $v" -l alias -x -d 'Another name for the resource'
end
complete -c ztnactl -n '__ztnactl_arg resource update 0' -a '(__ztnactl_names resource)'
complete -c ztnactl -n '__ztnactl_arg resource delete 0' -a '(__ztnactl_names resource)'
complete -c ztnactl -n '__ztnactl_using resource list' -l network -x -a '(__ztnactl_names network)' -d 'Only this network'
complete -c ztnactl -n '__ztnactl_using group create' -l description -x -d 'What the group is for'
for v in delete add-member remove-member
    complete -c ztnactl -n "__ztnactl_arg group $v 0" -a '(__ztnactl_names group)'
end
for v in add-member remove-member
    complete -c ztnactl -n "__ztnactl_arg group $v 1" -a '(__ztnactl_tunnelers)'
end
for v in create delete
    complete -c ztnactl -n "__ztnactl_arg policy $v 0" -a '(__ztnactl_names group)'
    complete -c ztnactl -n "__ztnactl_arg policy $v 1" -a '(__ztnactl_names resource)'
end
for v in delete passwd
    complete -c ztnactl -n "__ztnactl_arg admin $v 0" -a '(__ztnactl_names admin)'
end

for r in connector tunneler
    complete -c ztnactl -n "__ztnactl_using enroll $r" -l token-file -r -F -a - \
        -d 'Read the token from FILE, or - for stdin'
end
