use super::*;

#[test]
fn a_stack_trace_is_its_first_line_and_its_exception() {
    let one = "2024-01-15 14:23:48,001 ERROR Request 17 failed\n\
               java.lang.IllegalStateException: connection 10.0.0.1:80 reset\n\
               \tat com.acme.Client.send(Client.java:42)\n\
               Caused by: java.io.IOException: broken pipe";
    let two = "2024-01-16 09:00:00,500 ERROR Request 99 failed\n\
               java.lang.IllegalStateException: connection 10.0.0.2:80 reset\n\
               \tat com.acme.Pool.take(Pool.java:7)\n\
               \tat com.acme.Client.send(Client.java:40)";
    assert_eq!(template(one), template(two));
    assert!(
        template(one).ends_with("failed java.lang.IllegalStateException"),
        "{}",
        template(one)
    );
    let other = two.replace("IllegalStateException", "TimeoutException");
    assert_ne!(template(one), template(&other));
}

#[test]
fn hdfs_lines_share_a_template() {
    let a = template(
        "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating",
    );
    let b = template(
        "081110 050012 7716 INFO dfs.DataNode$PacketResponder: PacketResponder 2 for block blk_-7860871182399763934 terminating",
    );
    assert_eq!(a, b);
    assert_eq!(
        a,
        "<NUM> INFO dfs.DataNode$PacketResponder: PacketResponder <NUM> for block <BLK> terminating"
    );
}

#[test]
fn masks_addresses_paths_ids() {
    assert_eq!(
        template("Receiving block blk_-1 src: /10.251.214.18:41299 dest: /10.250.17.177:50010"),
        "Receiving block <BLK> src: <IP> dest: <IP>"
    );
    assert_eq!(
        template("allocateBlock: /user/root/rand4/_temporary/_task_200811092030_0012_m_001326_0/part-01326. blk_87"),
        "allocateBlock: <PATH>. <BLK>"
    );
    assert_eq!(
        template("request 550e8400-e29b-41d4-a716-446655440000 took 12.5 ms at 0x7fff5fbff8c8 (req=ab12cd34ef)"),
        "request <UUID> took <NUM> ms at <HEX> (req=<HEX>)"
    );
    assert_eq!(
        template("- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 RAS KERNEL INFO cache parity error corrected"),
        "- <NUM> <ID> RAS KERNEL INFO cache parity error corrected"
    );
    assert_eq!(
        template("deleted /var/log/app.log, done."),
        "deleted <PATH>, done."
    );
    assert_eq!(template("  spaced   out  "), "spaced out");
    assert_eq!(template(""), "");
}

#[test]
fn lists_collapse_and_glued_addresses_split() {
    assert_eq!(
        template("BLOCK* ask 10.251.91.32:50010 to replicate blk_1 to datanode(s) 10.0.0.1:50010 10.0.0.2:50010"),
        "BLOCK* ask <IP> to replicate <BLK> to datanode(s) <IP>"
    );
    assert_eq!(template("ids 1, 2, 3 done"), "ids <NUM> done");
    assert_eq!(
        template("10.250.11.85:50010:Transmitted block blk_-1 to /10.250.11.85:50010"),
        "<IP>:Transmitted block <BLK> to <IP>"
    );
    assert_eq!(
        template("10.251.66.192:50010:Got exception while serving blk_1 to /10.251.66.192:"),
        "<IP>:Got exception while serving <BLK> to <IP>:"
    );
}

#[test]
fn words_are_kept_as_they_are() {
    assert_eq!(
        template(
            "Unexpected error trying to delete block blk_5. BlockInfo not found in volumeMap."
        ),
        "Unexpected error trying to delete block <BLK>. BlockInfo not found in volumeMap."
    );
}

#[test]
fn tokens_split_words_and_keep_placeholders() {
    assert_eq!(
        tokens("<NUM> INFO dfs.DataNode$PacketResponder: block <BLK> terminating"),
        [
            "<NUM>",
            "info",
            "dfs",
            "datanode",
            "packetresponder",
            "block",
            "<BLK>",
            "terminating"
        ]
    );
}

#[test]
fn templates_differing_in_one_word_many_ways_are_one_statement() {
    let owned = |list: &[&str]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    let mut templates = owned(&[
        "Failed password for admin from <IP>",
        "link up on <NUM>",
        "Failed password for oracle from <IP>",
        "link down on <NUM>",
        "Failed password for guest from <IP>",
        "job done",
    ]);
    let index = fold_variable_words(&mut templates, 0);
    assert_eq!(
        templates,
        owned(&[
            "Failed password for <*> from <IP>",
            "link up on <NUM>",
            "link down on <NUM>",
            "job done",
        ]),
        "three user names are a field; two states are not"
    );
    assert_eq!(index, [0, 1, 0, 2, 0, 3]);

    // Another severity is another statement.
    let mut templates = owned(&[
        "disk sda checked",
        "disk sdb checked",
        "disk error checked",
        "disk sdc checked",
    ]);
    fold_variable_words(&mut templates, 0);
    assert_eq!(
        templates,
        owned(&["disk <*> checked", "disk error checked"])
    );

    // A bundle's templates keep their places; a new instance of one joins it.
    let mut templates = owned(&[
        "Failed password for <*> from <IP>",
        "job done",
        "Failed password for root from <IP>",
        "job started",
    ]);
    let index = fold_variable_words(&mut templates, 2);
    assert_eq!(
        templates,
        owned(&[
            "Failed password for <*> from <IP>",
            "job done",
            "job started"
        ])
    );
    assert_eq!(index, [0, 1, 0, 2]);
}

#[test]
fn a_field_found_in_training_matches_any_word_in_a_variant() {
    let folded = "Failed password for <*> from <IP> port <NUM> ssh2";
    let words: Vec<&str> = "Failed password for bob from <IP> port <NUM> ssh3"
        .split(' ')
        .collect();
    assert_eq!(variant_distance(folded, &words, 1), Some(1));
    let two: Vec<&str> = "Failed login for bob from <IP> port <NUM> ssh3"
        .split(' ')
        .collect();
    assert_eq!(variant_distance(folded, &two, 1), None);
}

#[test]
fn terminal_colours_are_not_part_of_the_template() {
    let plain = template("ERROR 2024-03-01 10:00:01 request failed: timeout");
    assert_eq!(
        template("\x1b[31mERROR\x1b[0m 2024-03-01 10:00:01 request failed: timeout"),
        plain
    );
    assert_eq!(
        template(
            "\x1b[1;31mERROR\x1b[0m 2024-03-01 10:00:01 request \x1b[4mfailed\x1b[24m: timeout"
        ),
        plain
    );
    // A window title (OSC) and a lone escape before a non-ASCII character.
    assert_eq!(template("\x1b]0;build\x07done \x1bé"), "done é");
    assert_eq!(
        crate::severity::severity_of(&template("\x1b[33m WARN\x1b[0m app: slow request")),
        crate::severity::Severity::Warn
    );
}

#[test]
fn glogs_level_letter_is_a_word_of_its_own() {
    use crate::severity::{severity_of, Severity};
    let error = template("E0115 14:23:47.123456   12 main.go:42] no route to host");
    assert_eq!(error, "E <NUM> <ID>] no route to host");
    assert_eq!(severity_of(&error), Severity::Error);
    assert_eq!(
        severity_of(&template("W0115 14:23:47.123456 1 main.go:9] slow")),
        Severity::Warn
    );
    // The same statement at another level is another template, as with level words.
    assert_ne!(
        template("I0115 14:23:47.123456   12 main.go:42] no route to host"),
        error
    );
    // A word that only looks like one is not split.
    assert_eq!(template("E0115 is a part number"), "<ID> is a part number");
}

#[test]
fn a_sentence_written_without_spaces_keeps_its_words_and_masks_its_numbers() {
    assert_eq!(
        template("2024-03-04 10:00:01 INFO 用户123登录成功"),
        "<NUM> INFO 用户<NUM>登录成功"
    );
    assert_eq!(
        template("订单20240304001已创建，金额99.5元"),
        "订单<NUM>已创建，金额<NUM>元"
    );
    assert_eq!(template("ユーザーa1b2がログイン"), "ユーザー<ID>がログイン");
    // Words of scripts written with spaces read as before.
    assert_eq!(template("café ouvert à 9h"), "café ouvert à <ID>");
}

#[test]
fn phrases_of_scripts_without_spaces_are_no_field_values() {
    // Three one-"word" messages: three statements, not a field of one.
    let mut templates: Vec<String> = ["用户<NUM>登录成功", "订单<NUM>已创建", "库存同步完成"]
        .iter()
        .map(|m| format!("<NUM> INFO {m}"))
        .collect();
    let index = fold_variable_words(&mut templates, 0);
    assert_eq!(index, vec![0, 1, 2]);
    assert!(is_phrase("登录成功"));
    assert!(!is_phrase("José"));
    let words: Vec<&str> = "<NUM> INFO 用户<NUM>登录成功".split(' ').collect();
    assert_eq!(
        variant_distance("<NUM> INFO 用户<NUM>登录失败", &words, 1),
        None
    );
    // Names in Latin letters still make a field.
    let mut templates: Vec<String> = ["José", "Zoë", "Amélie"]
        .iter()
        .map(|name| format!("<NUM> INFO user {name} logged in"))
        .collect();
    assert_eq!(fold_variable_words(&mut templates, 0), vec![0, 0, 0]);
}

#[test]
fn windows_paths_and_urls_are_paths() {
    assert_eq!(
        template(r"Opened the file C:\Windows\Logs\CBS\CbsPersist.log for writing"),
        "Opened the file <PATH> for writing"
    );
    assert_eq!(
        template(r"Share \\fileserver\builds\nightly mounted"),
        "Share <PATH> mounted"
    );
    // A URL, with or without a digit.
    assert_eq!(
        template("GET https://example.com/login done"),
        "GET <PATH> done"
    );
    // Relative paths and names in a namespace, with or without a digit: a pod's, an Android
    // component's, a content type.
    assert_eq!(
        template("synced pod=\"monitoring/web-abcde\" reading conf/app.yml"),
        "synced pod=\"<PATH>\" reading <PATH>"
    );
    assert_eq!(
        template("START cmp=com.tencent.mm/.ui.LauncherUI type application/json"),
        "START cmp=<PATH> type <PATH>"
    );
    // A word with a slash and no name on one side is not one (a token with a digit and a
    // slash, such as `3/4`, is masked as a path anyway).
    assert_eq!(template("done 3/4 and/ /or"), "done <PATH> and/ /or");
    // An octal escape is no path: HPC's `\042alt0\042` is a quoted component name.
    assert_eq!(
        template(r"Component \042alt0\042 is in the unavailable state"),
        r"Component <ID> is in the unavailable state"
    );
}

#[test]
fn an_access_logs_status_is_its_class() {
    assert_eq!(
        template(
            r#"10.0.0.7 - - [04/Mar/2024:10:00:01 +0000] "GET /api/users/42 HTTP/1.1" 503 19 "-" "curl/8.4.0""#
        ),
        r#"<IP> - - [<PATH> <NUM>] "GET <PATH>" <5XX> <NUM> "-" "<PATH>""#
    );
    assert_eq!(
        template(r#"INFO: 127.0.0.1:5000 - "POST /login HTTP/2" 201 Created"#),
        r#"INFO: <IP> - "POST /login <PATH>" <2XX> Created"#
    );
    // After a status key, in logfmt, JSON and prose.
    assert_eq!(
        template(r#"level=info msg="request done" status=503 took=12ms"#),
        r#"level=info msg="request done" status=<5XX> took=<ID>"#
    );
    assert_eq!(
        template(r#"{"msg":"done","status":404,"n":1}"#),
        r#"{"msg":"done","status":<4XX>,"n"<ID>}"#
    );
    assert_eq!(
        template(r#"{"status": 201, "response_code" : 502}"#),
        r#"{"status": <2XX>, "response_code" : <5XX>}"#
    );
    assert_eq!(
        template("GET /x status: 500 len: 10"),
        "GET /x status: <5XX> len: <NUM>"
    );
    // A number anywhere else is a number, and so is a code no status is.
    assert_eq!(template("status=1 exit=500"), "status=<NUM> exit=<NUM>");
    assert_eq!(template("HTTP/1.1 503 retry"), "<PATH> <NUM> retry");
    assert_eq!(
        template(r#""GET / HTTP/1.1" 999 9"#),
        r#""GET / <PATH>" <NUM>"#
    );

    // A server error is another statement than a success, not a variant of it; a client
    // error is a value of the same statement.
    let success = template(r#"<IP> "GET /x HTTP/1.1" 200 5 "-" "curl/8.4.0""#);
    let words: Vec<&str> = success.split(' ').collect();
    let failure = template(r#"<IP> "GET /x HTTP/1.1" 500 5 "-" "curl/8.4.0""#);
    let missing = template(r#"<IP> "GET /x HTTP/1.1" 404 5 "-" "curl/8.4.0""#);
    assert_eq!(variant_distance(&failure, &words, 1), None);
    assert_eq!(variant_distance(&missing, &words, 1), Some(1));
    assert_eq!(
        crate::severity::severity_of(&failure),
        crate::severity::Severity::Error
    );
    assert_eq!(
        crate::severity::severity_of(&missing),
        crate::severity::Severity::Info
    );
    // Nor is it a value of a field that successes and client errors made.
    let mut templates = vec![
        success.clone(),
        missing.clone(),
        template(r#"<IP> "GET /x HTTP/1.1" 304 5 "-" "curl/8.4.0""#),
    ];
    fold_variable_words(&mut templates, 0);
    assert_eq!(
        templates,
        [r#"<IP> "GET /x <PATH>" <*> <NUM> "-" "<PATH>""#]
    );
    let failed: Vec<&str> = failure.split(' ').collect();
    assert_eq!(variant_distance(&templates[0], &failed, 1), None);
    assert!(!instance_of(&templates[0], &failed));
    let missed: Vec<&str> = missing.split(' ').collect();
    assert!(instance_of(&templates[0], &missed));
}

#[test]
fn a_statement_of_two_fields_is_one_template() {
    let owned = |list: &[&str]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    let mut templates = owned(&[
        "customer Jane Smith signed in",
        "customer John Smith signed in",
        "customer Maria Smith signed in",
        "customer Jane Chen signed in",
        "customer John Chen signed in",
        "customer Maria Chen signed in",
        "customer Jane Wong signed in",
        "customer John Wong signed in",
        "customer Maria Wong signed in",
        "customer Wei Khan signed in",
        "customer Jane Kim signed in",
        "customer ERROR Kim signed in",
        "customer Ahmed Ali signed in",
    ]);
    let index = fold_variable_words(&mut templates, 0);
    // One field at a time first (`<*> Smith`, `<*> Chen`), then those; the names too rare to
    // fold on their own join the statement they are values of. A level word is no name.
    assert_eq!(
        templates,
        owned(&["customer <*> <*> signed in", "customer ERROR Kim signed in",])
    );
    assert_eq!(index, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
}

#[test]
fn a_statement_of_two_rare_fields_is_one_template() {
    let owned = |list: &[&str]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    // Only one first name came with three last names; the other names came once each, too
    // rarely to fold a place of their own, but they fill both places of that statement.
    let mut templates = owned(&[
        "card declined for Mia Kim today",
        "card declined for John Lopez today",
        "card declined for Mia Lopez today",
        "card declined for Noah Kim today",
        "card declined for Mia Wong today",
        "card declined for Emma Tanaka today",
        "card declined for ERROR Kim today",
        "card accepted for Emma Tanaka today",
    ]);
    let index = fold_variable_words(&mut templates, 0);
    assert_eq!(
        templates,
        owned(&[
            "card declined for <*> <*> today",
            "card declined for ERROR Kim today",
            "card accepted for Emma Tanaka today",
        ])
    );
    assert_eq!(index, [0, 0, 0, 0, 0, 0, 1, 2]);
}

#[test]
fn an_updates_fold_of_new_values_joins_the_bundles_statement() {
    let owned = |list: &[&str]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    let mut templates = owned(&[
        "customer <*> <*> signed in",
        "customer Jane Smith signed in",
        "customer John Smith signed in",
        "customer Maria Smith signed in",
    ]);
    let index = fold_variable_words(&mut templates, 1);
    assert_eq!(templates, owned(&["customer <*> <*> signed in"]));
    assert_eq!(index, [0, 0, 0, 0]);
    // A field is a field of the pattern too.
    let folded = ["customer", "<*>", "Smith", "signed", "in"];
    assert!(instance_of("customer <*> <*> signed in", &folded));
    assert!(!instance_of("customer Jane <*> signed in", &folded));
}

#[test]
fn email_addresses_are_masked() {
    assert_eq!(
        template("password reset sent to jane.doe+shop@mail.example.com for order 7"),
        "password reset sent to <EMAIL> for order <NUM>"
    );
    assert_eq!(
        template("Linux version 2.6.5 (bhcompile@bugs.build.redhat.com)"),
        "Linux version <NUM> (<EMAIL>)"
    );
    // No domain name, a Java object, an annotation: not addresses.
    assert_eq!(template("login root@web"), "login root@web");
    assert_eq!(template("leak at Pool@6a2b1ed4"), "leak at <ID>");
    assert_eq!(template("@Override done"), "@Override done");
}

#[test]
fn a_family_of_statements_is_not_one_field() {
    let owned = |list: &[&str]| list.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    // Each subject has states of its own: three statements with a state field each, not a
    // field of subjects and a field of states (a first and a last name combine freely).
    let mut templates = owned(&[
        "request step cache hit done",
        "request step cache miss done",
        "request step cache stored done",
        "request step session opened done",
        "request step session closed done",
        "request step session expired done",
        "request step disk ok done",
        "request step disk full done",
        "request step disk gone done",
    ]);
    fold_variable_words(&mut templates, 0);
    assert_eq!(
        templates,
        owned(&[
            "request step cache <*> done",
            "request step session <*> done",
            "request step disk <*> done",
        ])
    );
    // Nor do two states of another subject join the family's folded statements.
    let mut templates = owned(&[
        "request step cache hit done",
        "request step cache miss done",
        "request step cache stored done",
        "request step disk ok done",
        "request step disk full done",
        "request step auth ok done",
    ]);
    fold_variable_words(&mut templates, 0);
    assert_eq!(
        templates,
        owned(&[
            "request step cache <*> done",
            "request step disk ok done",
            "request step disk full done",
            "request step auth ok done",
        ])
    );
}
