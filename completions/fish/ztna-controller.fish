# SPDX-License-Identifier: Apache-2.0
#
# fish completion for ztna-controller

function __ztna_controller_command
    # The command typed so far, skipping options and their values.
    set -l tokens (commandline -opc)
    set -e tokens[1]
    set -l skip 0
    for t in $tokens
        if test $skip -eq 1
            set skip 0
        else if test "$t" = --confdir
            set skip 1
        else if not string match -q -- '-*' $t
            echo $t
            return 0
        end
    end
    return 1
end

function __ztna_controller_needs_command
    not __ztna_controller_command >/dev/null
end

# Before the command, or with init given: --if-needed is an option of init only.
function __ztna_controller_may_be_init
    set -l c (__ztna_controller_command); or return 0
    test "$c" = init
end

complete -c ztna-controller -f

complete -c ztna-controller -s h -l help -d 'Show help'
complete -c ztna-controller -l version -d 'Show the version'
complete -c ztna-controller -l confdir -x -a '(__fish_complete_directories)' \
    -d 'Read controller.conf and controller.conf.d/ from DIR'
complete -c ztna-controller -n __ztna_controller_may_be_init -l if-needed \
    -d 'init: succeed quietly when the database already holds a CA'
complete -c ztna-controller -n __ztna_controller_may_be_init -l admin -x \
    -d 'init: also create this administrator of the admin API'

complete -c ztna-controller -n __ztna_controller_needs_command -a init \
    -d 'Create the root and issuing CA and the database'
complete -c ztna-controller -n __ztna_controller_needs_command -a run -d 'Run the daemon'
