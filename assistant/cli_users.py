"""``python -m assistant users ...``: the accounts of a shared Docent. Run on the server
itself, by whoever administers it; it needs only the data dir, so it works while the
app runs (the page and API read the accounts file at each login)."""
from __future__ import annotations

import getpass
import sys

from assistant.accounts import ROLES, AccountError, AccountStore, add_account


def users_parser(sub) -> None:
    users = sub.add_parser("users", help="accounts: who may log in, with which rights")
    u_sub = users.add_subparsers(dest="users_command", required=True)
    add = u_sub.add_parser("add", help="make an account (asks for its password)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, help="admin: manages knowledge bases, folder "
                     "sync, training and deletion; user: asks and reads sources. Default: "
                     "admin for the first account, user after it")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    u_sub.add_parser("list", help="accounts, their roles and API tokens")
    u_sub.add_parser("remove", help="delete an account and its API tokens").add_argument("name")
    pw = u_sub.add_parser("passwd", help="set an account's password")
    pw.add_argument("name")
    pw.add_argument("--password-stdin", action="store_true")
    u_sub.add_parser("token", help="print a new API token for an account (shown once)"
                     ).add_argument("name")
    u_sub.add_parser("revoke", help="invalidate every API token of an account"
                     ).add_argument("name")


def cmd_users(settings, args) -> int:
    data = settings.paths.data_dir
    store = AccountStore(data / "accounts.sqlite3")
    try:
        return _COMMANDS[args.users_command](store, args, data)
    finally:
        store.close()


def _add(store: AccountStore, args, data) -> int:
    first = not store.exists()
    user, adopted = add_account(store, data / "conversations.sqlite3", args.name,
                                _password(args, f"Password for {args.name}: "), args.role)
    print(f"Account {user.name!r} made ({user.role}).")
    if adopted:
        print(f"The {adopted} conversation(s) made before accounts existed now belong "
              f"to {user.name!r}.")
    if first:
        print("From now on the API asks for a token (`python -m assistant users token "
              f"{user.name}`), and the page for a login once Docent is started again; "
              "admins manage it at /admin/.")
    return 0


def _list(store: AccountStore, args, data) -> int:
    accounts = store.list()
    if not accounts:
        print("No accounts: the page needs no login on this machine (loopback), and the "
              "server's api_token protects it beyond. Add one with `users add NAME`.")
    for a in accounts:
        print(f"{a.name}\t{a.role}\t{a.tokens} token(s)\tsince {a.created_at[:10]}")
    return 0


def _remove(store: AccountStore, args, data) -> int:
    store.remove(args.name)
    print(f"Account {args.name!r} removed, with its API tokens. Its conversations stay "
          "stored (`chats list` on this machine shows them).")
    return 0


def _passwd(store: AccountStore, args, data) -> int:
    store.set_password(args.name, _password(args, f"New password for {args.name}: "))
    print(f"Password of {args.name!r} changed.")
    return 0


def _token(store: AccountStore, args, data) -> int:
    token = store.new_token(args.name)
    print(token)
    print("Send it as 'Authorization: Bearer <token>'. It is shown only now; "
          f"`users revoke {args.name}` invalidates it.", file=sys.stderr)
    return 0


def _revoke(store: AccountStore, args, data) -> int:
    n = store.revoke_tokens(args.name)
    print(f"{n} token(s) of {args.name!r} revoked.")
    return 0


_COMMANDS = {"add": _add, "list": _list, "remove": _remove, "passwd": _passwd,
             "token": _token, "revoke": _revoke}


def _password(args, prompt: str) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise AccountError("No terminal to ask the password on: pass --password-stdin and "
                           "the password on standard input.")
    first = getpass.getpass(prompt)
    if getpass.getpass("Again: ") != first:
        raise AccountError("The two passwords differ; nothing changed.")
    return first
