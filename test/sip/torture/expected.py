"""Expected results for the RFC 4475 torture messages in this folder.

Each ``valid/<name>.dat`` and ``invalid/<name>.dat`` file holds the raw bytes of
one test message of RFC 4475 (sections 3.1.1 and 3.1.2), exactly as they would
arrive in a single UDP datagram: CRLF line ends, non-ASCII and control bytes as
they are.  This module is not part of a package; tests load it by path, e.g.
with ``importlib.util.spec_from_file_location``.

``VALID`` maps a message name to a dict with:

* ``section`` and ``title``: where the message is in RFC 4475.
* ``kind``: ``"request"`` or ``"response"``.
* ``method``: the request method (``None`` for a response).
* ``fields``: values a parser must produce.  Keys ending in ``_raw`` are the
  bytes of the message as text (escapes and quoting kept); the same key without
  ``_raw`` is the value after unquoting (quoted-pair) or %-unescaping, where the
  RFC says it applies.  Header values with folded lines are given unfolded
  (CRLF plus leading white space replaced by one SP).  Text is ``str``; bytes
  outside ASCII are UTF-8 in the message.  Indexed keys (``via0_*``,
  ``contact1_*``) count header field values top-down, 0-based.

``INVALID`` maps a message name to a dict with:

* ``section``, ``title`` and ``kind`` as above.
* ``outcome``: how a SIP server that gets the message over UDP should answer,
  per the RFC text: a status code (``"400"``, ``"501"``, ``"505"``),
  ``"drop"`` (a malformed response: never answered, just discarded) or
  ``"accept"`` (the RFC lets an element process it).
* ``alt_outcome``: another answer the RFC text allows (``""`` if none), e.g.
  ``"accept"`` where it lets a liberal element repair or ignore the fault.
* ``why``: a short quote from the RFC.
"""

_AMAZING = "amazinglylongcallername" * 5

# The PKCS#7 blob of mpart01 (RFC 4475 section 3.1.1.11, <hex> block).
_MPART01_BINARY_HEX = (
    "3082015206092A864886F70D010702A08201433082013F02"
    "01013109300706052B0E03021A300B06092A864886F70D010701318201203082"
    "011C020101307C3070310B300906035504061302555331133011060355040813"
    "0A43616C69666F726E69613111300F0603550407130853616E204A6F7365310E"
    "300C060355040A1305736970697431293027060355040B132053697069742054"
    "65737420436572746966696361746520417574686F7269747902080195007102"
    "330113300706052B0E03021A300D06092A864886F70D01010105000481808EF4"
    "66F948F0522DD2E5978E9D95AAE9F2FE15A06659716292E8DA2AA8D8350A68CE"
    "FFAE3CBD2BFF1675DDD5648E593DD64728F26220F7E941749E330D9A15EDABDB"
    "93D10C42102E7B7289D29CC0C9AE2EFBC7C0CFF9172F3B027E4FC027E1546DE4"
    "B6AA3ABB3E66CCCB5DD6C64B8383149CB8E6FF182D944FE57B65BC99D005"
)

VALID: dict[str, dict[str, object]] = {
    # 3.1.1.1: folding, odd spacing and case, unknown headers, leading zeros.
    "wsinv": {
        "section": "3.1.1.1",
        "title": "A Short Tortuous INVITE",
        "kind": "request",
        "method": "INVITE",
        "fields": {
            "request_uri": "sip:vivekg@chair-dnrc.example.com;unknownparam",
            "request_uri_user": "vivekg",
            "request_uri_host": "chair-dnrc.example.com",
            "request_uri_param_unknownparam": "",
            "sip_version": "SIP/2.0",
            "to_uri": "sip:vivekg@chair-dnrc.example.com",
            "to_display_name": "",
            "to_tag": "1918181833n",
            "from_display_name_raw": '"J Rosenberg \\\\\\""',
            "from_display_name": 'J Rosenberg \\"',
            "from_uri": "sip:jdrosen@example.com",
            "from_tag": "98asjd8",
            "max_forwards": 68,
            "call_id": "wsinv.ndaksdj@192.0.2.1",
            "content_length": 150,
            "cseq_number": 9,
            "cseq_method": "INVITE",
            "via_count": 3,
            "via0_transport": "UDP",
            "via0_host": "192.0.2.2",
            "via0_branch": "390skdjuw",
            "via1_transport": "TCP",
            "via1_host": "spindle.example.com",
            "via1_branch": "z9hG4bK9ikj8",
            "via2_transport": "UDP",
            "via2_host": "192.168.255.111",
            "via2_branch": "z9hG4bK30239",
            "subject": "",
            "header_NewFangledHeader": "newfangled value continued newfangled value",
            "header_UnknownHeaderWithUnusualValue": ";;,,;;,;",
            "content_type": "application/sdp",
            "route_count": 1,
            "route0": (
                "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"
            ),
            "contact_count": 1,
            "contact0_display_name_raw": '"Quoted string \\"\\""',
            "contact0_display_name": 'Quoted string ""',
            "contact0_uri": "sip:jdrosen@example.com",
            "contact0_param_newparam": "newvalue",
            "contact0_param_secondparam": "",
            "contact0_param_q": "0.33",
            # Header names exactly as sent, top-down (s = Subject, v = Via,
            # m = Contact in compact form).
            "header_names_as_sent": (
                "TO,from,MaX-fOrWaRdS,Call-ID,Content-Length,cseq,Via,s,"
                "NewFangledHeader,UnknownHeaderWithUnusualValue,Content-Type,"
                "Route,v,m"
            ),
            "body_length": 150,
        },
    },
    # 3.1.1.2: every token character; NUL, BEL, DEL and UTF-8 in quoted text.
    "intmeth": {
        "section": "3.1.1.2",
        "title": "Wide Range of Valid Characters",
        "kind": "request",
        "method": "!interesting-Method0123456789_*+`.%indeed'~",
        "fields": {
            "request_uri": (
                "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
                ":&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
            ),
            "request_uri_user": "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*",
            "request_uri_password": "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)",
            "request_uri_host": "example.com",
            "via_count": 1,
            "via0_transport": "TCP",
            "via0_host": "host1.example.com",
            "via0_branch": "z9hG4bK-.!%66*_+`'~",
            "to_display_name_raw": '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"',
            "to_display_name": "BEL:\x07 NUL:\x00 DEL:\x7f",
            "to_uri": (
                "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*@example.com"
            ),
            "from_display_name": "token1~` token2'+_ token3*%!.-",
            "from_uri": "sip:mundane@example.com",
            "from_param_name": "fromParam''~+*_!.-%",
            # Quoted-string value (quotes removed): UTF-8 D1 80 D0 B0 D0 B1 ...
            "from_param_value": (
                "\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"
            ),
            "from_tag": "_token~1'+`*%!-.",
            "call_id": "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
            "cseq_number": 139122385,
            "cseq_method": "!interesting-Method0123456789_*+`.%indeed'~",
            "max_forwards": 255,
            "extension_header_name": "extensionHeader-!.%*+_`'~",
            # UTF-8 EF BB BF E5 A4 A7 E5 81 9C E9 9B BB: starts with a BOM.
            "extension_header_value": "\ufeff\u5927\u505c\u96fb",
            "content_length": 0,
        },
    },
    # 3.1.1.3: %HEX HEX escapes in SIP URIs must be unescaped (once).
    "esc01": {
        "section": "3.1.1.3",
        "title": "Valid Use of the % Escaping Mechanism",
        "kind": "request",
        "method": "INVITE",
        "fields": {
            "request_uri": "sip:sips%3Auser%40example.com@example.net",
            "request_uri_user_raw": "sips%3Auser%40example.com",
            "request_uri_user": "sips:user@example.com",
            "request_uri_host": "example.net",
            "to_uri": "sip:%75se%72@example.com",
            "to_user_raw": "%75se%72",
            "to_user": "user",
            "from_uri": "sip:I%20have%20spaces@example.net",
            "from_user_raw": "I%20have%20spaces",
            "from_user": "I have spaces",
            "from_tag": "938",
            "max_forwards": 87,
            "call_id": "esc01.239409asdfakjkn23onasd0-3234",
            "cseq_number": 234234,
            "cseq_method": "INVITE",
            "via_count": 1,
            "via0_transport": "UDP",
            "via0_host": "host5.example.net",
            "via0_branch": "z9hG4bKkdjuw",
            "content_type": "application/sdp",
            "contact_count": 1,
            "contact0_user_raw": "cal%6Cer",
            "contact0_user": "caller",
            "contact0_host": "host5.example.net",
            "contact0_uri_param0_name_raw": "%6C%72",
            "contact0_uri_param0_name": "lr",
            "contact0_uri_param0_value": "",
            "contact0_uri_param1_name_raw": "n%61me",
            "contact0_uri_param1_name": "name",
            "contact0_uri_param1_value_raw": "v%61lue%25%34%31",
            # Not "valueA": unescaping is never recursive.
            "contact0_uri_param1_value": "value%41",
            "content_length": 150,
        },
    },
    # 3.1.1.4: %00 in user parts; the unescaped AOR keeps its NUL.
    "escnull": {
        "section": "3.1.1.4",
        "title": "Escaped Nulls in URIs",
        "kind": "request",
        "method": "REGISTER",
        "fields": {
            "request_uri": "sip:example.com",
            "to_uri": "sip:null-%00-null@example.com",
            "to_user_raw": "null-%00-null",
            "to_user": "null-\x00-null",
            "from_uri": "sip:null-%00-null@example.com",
            "from_user": "null-\x00-null",
            "from_tag": "839923423",
            "max_forwards": 70,
            "call_id": "escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd",
            "cseq_number": 14398234,
            "cseq_method": "REGISTER",
            "via_count": 1,
            "via0_branch": "z9hG4bKkdjuw",
            "contact_count": 2,
            "contact0_uri": "sip:%00@host5.example.com",
            "contact0_user_raw": "%00",
            "contact0_user": "\x00",
            "contact1_uri": "sip:%00%00@host5.example.com",
            "contact1_user_raw": "%00%00",
            "contact1_user": "\x00\x00",
            "contact_host": "host5.example.com",
            "content_length": 0,
        },
    },
    # 3.1.1.5: % outside a SIP URI is a plain character, not an escape.
    "esc02": {
        "section": "3.1.1.5",
        "title": "Use of % When It Is Not an Escape",
        "kind": "request",
        "method": "RE%47IST%45R",
        "fields": {
            "request_uri": "sip:registrar.example.com",
            "to_display_name": "%Z%45",
            "to_uri": "sip:resource@example.com",
            "from_display_name": "%Z%45",
            "from_uri": "sip:resource@example.com",
            "from_tag": "f232jadfj23",
            "call_id": "esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf",
            "via_count": 1,
            "via0_transport": "TCP",
            "via0_host": "host.example.com",
            "via0_branch": "z9hG4bK209%fzsnel234",
            "cseq_number": 29344,
            "cseq_method": "RE%47IST%45R",
            "max_forwards": 70,
            "contact_count": 2,
            "contact0_uri": "sip:alias1@host1.example.com",
            "contact1_uri": "sip:alias3@host3.example.com",
            "extension_header_name": "C%6Fntact",
            "extension_header_value": "<sip:alias2@host2.example.com>",
            "content_length": 0,
        },
    },
    # 3.1.1.6: token display name directly followed by "<".
    "lwsdisp": {
        "section": "3.1.1.6",
        "title": "Message with No LWS between Display Name and <",
        "kind": "request",
        "method": "OPTIONS",
        "fields": {
            "request_uri": "sip:user@example.com",
            "to_uri": "sip:user@example.com",
            "from_display_name": "caller",
            "from_uri": "sip:caller@example.com",
            "from_tag": "323",
            "max_forwards": 70,
            "call_id": "lwsdisp.1234abcd@funky.example.com",
            "cseq_number": 60,
            "cseq_method": "OPTIONS",
            "via_count": 1,
            "via0_host": "funky.example.com",
            "via0_branch": "z9hG4bKkdjuw",
            "content_length": 0,
        },
    },
    # 3.1.1.7: very long values and 34 Via header field values.
    "longreq": {
        "section": "3.1.1.7",
        "title": "Long Values in Header Fields",
        "kind": "request",
        "method": "INVITE",
        "fields": {
            "request_uri": "sip:user@example.com",
            "to_display_name": (
                "I have a user name of " + "extreme" * 10 + " proportion"
            ),
            "to_uri_user": "user",
            "to_uri_host": "example.com",
            "to_uri_port": 6000,
            "to_uri_param_unknownparam1": "very" + "long" * 20 + "value",
            "to_uri_param1_name": "longparam" + "name" * 25,
            "to_uri_param1_value": "shortvalue",
            "to_uri_param2_name": "very" + "long" * 25 + "ParameterNameWithNoValue",
            "to_uri_param2_value": "",
            "from_uri": "sip:" + _AMAZING + "@example.net",
            "from_user": _AMAZING,
            "from_tag": "12" + "982" * 50 + "424",
            "from_param1_name": "unknownheaderparam" + "name" * 20,
            "from_param1_value": "unknowheaderparam" + "value" * 15,
            "from_param2_name": "unknownValueless" + "paramname" * 10,
            "from_param2_value": "",
            "call_id": "longreq.one" + "really" * 20 + "longcallid",
            "cseq_number": 3882340,
            "cseq_method": "INVITE",
            "extension_header_name": "Unknown-" + "Long" * 20 + "-Name",
            "extension_header_value": (
                "unknown-" + "long" * 20 + "-value; "
                "unknown-" + "long" * 20 + "-parameter-name = "
                "unknown-" + "long" * 20 + "-parameter-value"
            ),
            "via_count": 34,
            "via0_host": "sip33.example.com",
            "via32_host": "sip1.example.com",
            "via33_host": "host.example.com",
            "via33_received": "192.0.2.5",
            "via33_branch": "very" + "long" * 50 + "branchvalue",
            "max_forwards": 70,
            "contact_count": 1,
            "contact0_uri": "sip:" + _AMAZING + "@host5.example.net",
            "content_type": "application/sdp",
            "content_length": 150,
            "body_length": 150,
        },
    },
    # 3.1.1.8: a REGISTER (Content-Length 0) followed by junk that looks like
    # an INVITE; only the first 300 octets are the request, the rest is noise.
    "dblreq": {
        "section": "3.1.1.8",
        "title": "Extra Trailing Octets in a UDP Datagram",
        "kind": "request",
        "method": "REGISTER",
        "fields": {
            "request_uri": "sip:example.com",
            "to_uri": "sip:j.user@example.com",
            "from_uri": "sip:j.user@example.com",
            "from_tag": "43251j3j324",
            "max_forwards": 8,
            "call_id": "dblreq.0ha0isndaksdj99sdfafnl3lk233412",
            "contact_count": 1,
            "contact0_uri": "sip:j.user@host.example.com",
            "cseq_number": 8,
            "cseq_method": "REGISTER",
            "via_count": 1,
            "via0_host": "192.0.2.125",
            "via0_branch": "z9hG4bKkdjuw23492",
            "content_length": 0,
            "body_length": 0,
            "datagram_length": 750,
            "message_length": 300,
            "trailing_octets": 450,
            # Must not be seen as a request: the noise after the REGISTER.
            "ignored_call_id": "dblreq.0ha0isnda977644900765@192.0.2.15",
        },
    },
    # 3.1.1.9: ";" parameter and an escaped "@" inside the user part.
    "semiuri": {
        "section": "3.1.1.9",
        "title": "Semicolon-Separated Parameters in URI User Part",
        "kind": "request",
        "method": "OPTIONS",
        "fields": {
            "request_uri": "sip:user;par=u%40example.net@example.com",
            "request_uri_user_raw": "user;par=u%40example.net",
            "request_uri_user": "user;par=u@example.net",
            "request_uri_host": "example.com",
            "to_uri": "sip:j_user@example.com",
            "from_uri": "sip:caller@example.org",
            "from_tag": "33242",
            "max_forwards": 3,
            "call_id": "semiuri.0ha0isndaksdj",
            "cseq_number": 8,
            "cseq_method": "OPTIONS",
            "accept": (
                "application/sdp, application/pkcs7-mime, multipart/mixed, "
                "multipart/signed, message/sip, message/sipfrag"
            ),
            "accept_count": 6,
            "via_count": 1,
            "via0_host": "192.0.2.1",
            "via0_branch": "z9hG4bKkdjuw",
            "content_length": 0,
        },
    },
    # 3.1.1.10: UDP, SCTP, TLS, an unknown transport and TCP in Via.
    "transports": {
        "section": "3.1.1.10",
        "title": "Varied and Unknown Transport Types",
        "kind": "request",
        "method": "OPTIONS",
        "fields": {
            "request_uri": "sip:user@example.com",
            "to_uri": "sip:user@example.com",
            "from_uri": "sip:caller@example.com",
            "from_tag": "323",
            "max_forwards": 70,
            # Sent as "Call-ID:  transports..." (two spaces after the colon).
            "call_id": "transports.kijh4akdnaqjkwendsasfdj",
            "accept": "application/sdp",
            "cseq_number": 60,
            "cseq_method": "OPTIONS",
            "via_count": 5,
            "via0_transport": "UDP",
            "via0_host": "t1.example.com",
            "via0_branch": "z9hG4bKkdjuw",
            "via1_transport": "SCTP",
            "via1_host": "t2.example.com",
            "via1_branch": "z9hG4bKklasjdhf",
            "via2_transport": "TLS",
            "via2_host": "t3.example.com",
            "via2_branch": "z9hG4bK2980unddj",
            "via3_transport": "UNKNOWN",
            "via3_host": "t4.example.com",
            "via3_branch": "z9hG4bKasd0f3en",
            "via4_transport": "TCP",
            "via4_host": "t5.example.com",
            "via4_branch": "z9hG4bK0a9idfnee",
            "content_length": 0,
        },
    },
    # 3.1.1.11: multipart/mixed body whose second part is binary (has NULs).
    "mpart01": {
        "section": "3.1.1.11",
        "title": "Multipart MIME Message",
        "kind": "request",
        "method": "MESSAGE",
        "fields": {
            "request_uri": "sip:kumiko@example.org",
            "via_count": 1,
            "via0_transport": "UDP",
            "via0_host": "127.0.0.1",
            "via0_port": 5070,
            "via0_branch": "z9hG4bK-d87543-4dade06d0bdb11ee-1--d87543-",
            "via0_param_rport": "",
            "max_forwards": 70,
            "route_count": 1,
            "route0": "<sip:127.0.0.1:5080>",
            "contact0_uri": "sip:fluffy@127.0.0.1:5070",
            "to_uri": "sip:kumiko@example.org",
            "from_uri": "sip:fluffy@example.com",
            "from_tag": "2fb0dcc9",
            "call_id": "3d9485ad0c49859b@Zmx1ZmZ5LW1hYy0xNi5sb2NhbA..",
            "cseq_number": 1,
            "cseq_method": "MESSAGE",
            "content_transfer_encoding": "binary",
            "content_type": "multipart/mixed;boundary=7a9cbec02ceef655",
            "content_type_media": "multipart/mixed",
            "content_type_boundary": "7a9cbec02ceef655",
            "date": "Sat, 15 Oct 2005 04:44:56 GMT",
            "user_agent": "SIPimp.org/0.2.5 (curses)",
            "content_length": 553,
            "body_length": 553,
            "part_count": 2,
            "part0_content_type": "text/plain",
            "part0_content_transfer_encoding": "binary",
            "part0_body": "Hello",
            "part1_content_type": "application/octet-stream",
            "part1_content_transfer_encoding": "binary",
            "part1_body_length": 342,
            "part1_body_hex": _MPART01_BINARY_HEX,
            "part1_nul_count": 2,
        },
    },
    # 3.1.1.12: reason phrase with UTF-8 (Russian) text.
    "unreason": {
        "section": "3.1.1.12",
        "title": "Unusual Reason Phrase",
        "kind": "response",
        "method": None,
        "fields": {
            "sip_version": "SIP/2.0",
            "status_code": 200,
            "reason_phrase": (
                "= 2**3 * 5**2 "
                "\u043d\u043e \u0441\u0442\u043e "
                "\u0434\u0435\u0432\u044f\u043d\u043e\u0441\u0442\u043e "
                "\u0434\u0435\u0432\u044f\u0442\u044c - "
                "\u043f\u0440\u043e\u0441\u0442\u043e\u0435"
            ),
            "reason_phrase_utf8_hex": (
                "3D20322A2A33202A20352A2A3220"
                "D0BDD0BE20D181D182D0BE20D0B4D0B5D0B2D18FD0BDD0BED181D182D0BE20"
                "D0B4D0B5D0B2D18FD182D18C202D20D0BFD180D0BED181D182D0BED0B5"
            ),
            "via_count": 1,
            "via0_host": "192.0.2.198",
            "via0_branch": "z9hG4bK1324923",
            "call_id": "unreason.1234ksdfak3j2erwedfsASdf",
            "cseq_number": 35,
            "cseq_method": "INVITE",
            "from_uri": "sip:user@example.com",
            "from_tag": "11141343",
            "to_uri": "sip:user@example.edu",
            "to_tag": "2229",
            "content_length": 154,
            "content_type": "application/sdp",
            "contact0_uri": "sip:user@host198.example.com",
            "body_length": 154,
        },
    },
    # 3.1.1.13: "SIP/2.0 100 " then CRLF: the SP is there, the phrase is empty.
    "noreason": {
        "section": "3.1.1.13",
        "title": "Empty Reason Phrase",
        "kind": "response",
        "method": None,
        "fields": {
            "status_line_raw": "SIP/2.0 100 ",
            "sip_version": "SIP/2.0",
            "status_code": 100,
            "reason_phrase": "",
            "via_count": 1,
            "via0_host": "192.0.2.105",
            "via0_branch": "z9hG4bK2398ndaoe",
            "call_id": "noreason.asndj203insdf99223ndf",
            "cseq_number": 35,
            "cseq_method": "INVITE",
            "from_uri": "sip:user@example.com",
            "from_tag": "39ansfi3",
            "to_uri": "sip:user@example.edu",
            "to_tag": "902jndnke3",
            "content_length": 0,
            "contact0_uri": "sip:user@host105.example.com",
        },
    },
}

INVALID: dict[str, dict[str, object]] = {
    # 3.1.2.1: Via "192.0.2.15;;,;,," and Contact "...>;;;;".
    "badinv01": {
        "section": "3.1.2.1",
        "title": "Extraneous Header Field Separators",
        "kind": "request",
        "outcome": "400",
        "alt_outcome": "",
        "why": (
            "An element receiving this request should respond with a 400 Bad "
            "Request error."
        ),
    },
    # 3.1.2.2: Content-Length 9999, far more than the 154-octet body.
    "clerr": {
        "section": "3.1.2.2",
        "title": "Content Length Larger Than Message",
        "kind": "request",
        "outcome": "400",
        "alt_outcome": "",
        "why": (
            "When sent over UDP (as this message ostensibly was), the receiving "
            "element should respond with a 400 Bad Request error."
        ),
    },
    # 3.1.2.3: Content-Length -999.
    "ncl": {
        "section": "3.1.2.3",
        "title": "Negative Content-Length",
        "kind": "request",
        "outcome": "400",
        "alt_outcome": "",
        "why": (
            "An element receiving this message should respond with an error.  "
            "This request appeared over UDP, so the remainder of the datagram "
            "can simply be discarded."
        ),
    },
    # 3.1.2.4: CSeq 36893488147419103232, Max-Forwards 300, huge Expires.
    "scalar02": {
        "section": "3.1.2.4",
        "title": "Request Scalar Fields with Overlarge Values",
        "kind": "request",
        "outcome": "400",
        "alt_outcome": "",
        "why": (
            "An element receiving this request should respond with a 400 Bad "
            "Request due to the CSeq error."
        ),
    },
    # 3.1.2.5: 503 with overlarge CSeq, Retry-After and Warning code 1812.
    "scalarlg": {
        "section": "3.1.2.5",
        "title": "Response Scalar Fields with Overlarge Values",
        "kind": "response",
        "outcome": "drop",
        "alt_outcome": "",
        "why": "An element receiving this response will simply discard it.",
    },
    # 3.1.2.6: To: "Mr. J. User <sip:j.user@example.com> (no closing quote).
    "quotbal": {
        "section": "3.1.2.6",
        "title": "Unterminated Quoted String in Display Name",
        "kind": "request",
        "outcome": "400",
        "alt_outcome": "",
        "why": (
            "An element receiving this request should return a 400 Bad Request error."
        ),
    },
    # 3.1.2.7: INVITE <sip:user@example.com> SIP/2.0
    "ltgtruri": {
        "section": "3.1.2.7",
        "title": "<> Enclosing Request-URI",
        "kind": "request",
        "outcome": "400",
        "alt_outcome": "accept",
        "why": (
            "It is reasonable always to reject a request with this error with "
            "a 400 Bad Request."
        ),
    },
    # 3.1.2.8: INVITE sip:user@example.com; lr SIP/2.0
    "lwsruri": {
        "section": "3.1.2.8",
        "title": "Malformed SIP Request-URI (embedded LWS)",
        "kind": "request",
        "outcome": "400",
        "alt_outcome": "accept",
        "why": (
            "An element receiving this request should respond with a 400 Bad Request."
        ),
    },
    # 3.1.2.9: INVITE  sip:user@example.com  SIP/2.0 (two SP each).
    "lwsstart": {
        "section": "3.1.2.9",
        "title": "Multiple SP Separating Request-Line Elements",
        "kind": "request",
        "outcome": "400",
        "alt_outcome": "accept",
        "why": "It is acceptable to reject this request as malformed.",
    },
    # 3.1.2.10: request line ends "SIP/2.0" SP SP CRLF.
    "trws": {
        "section": "3.1.2.10",
        "title": "SP Characters at End of Request-Line",
        "kind": "request",
        "outcome": "400",
        "alt_outcome": "accept",
        "why": "It is acceptable to reject this request as malformed.",
    },
    # 3.1.2.11: Request-URI sip:user@example.com?Route=%3Csip:example.com%3E
    "escruri": {
        "section": "3.1.2.11",
        "title": "Escaped Headers in SIP Request-URI",
        "kind": "request",
        "outcome": "400",
        "alt_outcome": "accept",
        "why": (
            "It is acceptable for an element to reject this request with a 400 "
            "Bad Request."
        ),
    },
    # 3.1.2.12: Date: Fri, 01 Jan 2010 16:00:00 EST (not GMT).  A presence
    # server does not use Date, so it may ignore the value.
    "baddate": {
        "section": "3.1.2.12",
        "title": "Invalid Time Zone in Date Header Field",
        "kind": "request",
        "outcome": "accept",
        "alt_outcome": "400",
        "why": (
            "An element wishing to be liberal in what it accepts could ignore "
            "this value altogether if it wasn't going to use the Date header "
            "field anyway."
        ),
    },
    # 3.1.2.13: Contact: sip:user@example.com?Route=... without <>.
    "regbadct": {
        "section": "3.1.2.13",
        "title": "Failure to Enclose name-addr URI in <>",
        "kind": "request",
        "outcome": "400",
        "alt_outcome": "accept",
        "why": (
            "It is reasonable for an element receiving this request to respond "
            "with a 400 Bad Request."
        ),
    },
    # 3.1.2.14: To: "Watson, Thomas" < sip:t.watson@example.org >
    "badaspec": {
        "section": "3.1.2.14",
        "title": "Spaces within addr-spec",
        "kind": "request",
        "outcome": "400",
        "alt_outcome": "accept",
        "why": (
            "It is reasonable to reject this request with a 400 Bad Request response."
        ),
    },
    # 3.1.2.15: unquoted display names with "," and ".".  The archive file
    # ends right after "l: 0" CRLF (no empty line), so keep that in mind.
    "baddn": {
        "section": "3.1.2.15",
        "title": "Non-token Characters in Display Name",
        "kind": "request",
        "outcome": "400",
        "alt_outcome": "accept",
        "why": (
            "It is reasonable always to reject this kind of error with a 400 "
            "Bad Request response."
        ),
    },
    # 3.1.2.16: OPTIONS ... SIP/7.0
    "badvers": {
        "section": "3.1.2.16",
        "title": "Unknown Protocol Version",
        "kind": "request",
        "outcome": "505",
        "alt_outcome": "",
        "why": (
            "The element should respond to the request with a 505 Version Not "
            "Supported error."
        ),
    },
    # 3.1.2.17: OPTIONS request with "CSeq: 8 INVITE".
    "mismatch01": {
        "section": "3.1.2.17",
        "title": "Start Line and CSeq Method Mismatch",
        "kind": "request",
        "outcome": "400",
        "alt_outcome": "",
        "why": (
            "Any element receiving this request will respond with a 400 Bad Request."
        ),
    },
    # 3.1.2.18: NEWMETHOD request with "CSeq: 8 INVITE".
    "mismatch02": {
        "section": "3.1.2.18",
        "title": "Unknown Method with CSeq Method Mismatch",
        "kind": "request",
        "outcome": "501",
        "alt_outcome": "400",
        "why": (
            "Any element receiving this response should respond with a 501 Not "
            "Implemented.  A 400 Bad Request is also acceptable"
        ),
    },
    # 3.1.2.19: "SIP/2.0 4294967301 better not break the receiver".
    "bigcode": {
        "section": "3.1.2.19",
        "title": "Overlarge Response Code",
        "kind": "response",
        "outcome": "drop",
        "alt_outcome": "",
        "why": (
            "This response has a response code larger than 699.  An element "
            "receiving this response should simply drop it."
        ),
    },
}
