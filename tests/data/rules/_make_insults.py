"""Write insults.jsonl: hand-written chat lines with a disguised insult or profanity.

Standard library only, seeded, deterministic. Run from the repository root:

    python tests/data/rules/_make_insults.py

Each carrier sentence marks the span to disguise with braces, e.g. "you {idiot}". The
script picks the obfuscation(s) for each line (keeping the per-technique counts even),
applies them to the span, checks that undoing them gives the span back, and writes one
JSON object per line. Invisible format characters (category Cf) are written as
``\\uXXXX`` escapes; every other character is written as UTF-8.
"""

from __future__ import annotations

import json
import random
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

OUT = Path(__file__).with_name("insults.jsonl")
SEED = 20240611

EXPECT = {
    "slur_at_person": "block",
    "directed_profanity": "review",
    "directed_insult": "review",
    "bare_profanity": "flag",
}

# (base, kind, carrier sentences); the {span} is what gets disguised
CORPUS: list[tuple[str, str, list[str]]] = [
    (
        "fuck you",
        "directed_profanity",
        [
            "@mike {fuck} you and your stupid clan",
            "{fuck you}, I'm not doing your homework again",
            "lol {fuck} you too buddy, enjoy the ban",
            "honestly {fuck you} @jess_22 for leaking the ending",
            "you sold my skin for 20 bucks?? {fuck} you",
            "{fuck} you ref, that was never a foul 🤬",
            "bro {fuck you} for real, you knew I was afk",
            "I trusted you with the password. {fuck} you.",
            "@tyler {fuck} you and the horse you rode in on",
            "yeah well {fuck} you, I'm taking my ball and going home",
            "{fuck} u and ur whole team, camping noobs",
        ],
    ),
    (
        "go fuck yourself",
        "directed_profanity",
        [
            "@dan go {fuck} yourself, nobody asked",
            "if you don't like my art, go {fuck} yourself 🙂",
            "{go fuck yourself} and stop DMing me",
            "go {fuck} yourself with that attitude",
            "you can go {fuck} yourself, I'm done carrying you",
            "lmao go {fuck} urself",
            "{go fuck yourself}. seriously.",
            "after all that you want a refund? go {fuck} yourself",
            "@kayla go {fuck} yourself, you know what you did",
            "why don't you go {fuck} yourself for once",
        ],
    ),
    (
        "fuck off",
        "directed_profanity",
        [
            "{fuck} off @noobmaster, this is a private server",
            "just {fuck} off already",
            "{fuck} off with your crypto spam",
            "can you {fuck} off and let me play",
            "@ravi {fuck} off, I said no",
            "omg {fuck} off, nobody wants your opinion",
            "{fuck} off back to reddit",
            "I'm blocking you, {fuck} off",
            "{fuck} off mate, you're not welcome here",
            "kindly {fuck} off 😊",
        ],
    ),
    (
        "screw you",
        "directed_profanity",
        [
            "{screw} you, I was here first",
            "@chris.b {screw} you and your fake giveaway",
            "well {screw} you too then",
            "{screw} you guys, I'm going home",
            "oh {screw} you, you knew the answer the whole time",
            "{screw} you for spoiling the finale 😡",
            "{screw} you and your 'constructive criticism'",
            "yeah {screw} you, I'm reporting this",
            "{screw} u, not sharing my loot",
            "@dan {screw} you honestly",
        ],
    ),
    (
        "eat shit",
        "directed_profanity",
        [
            "eat {shit} @xXsniperXx",
            "go eat {shit}, you camper",
            "you can eat {shit} for all I care",
            "eat {shit}, I won fair and square",
            "lol eat {shit} nerd",
            "go eat {shit} @tyler",
            "eat {shit} buddy, scoreboard says 3-0",
            "nah eat {shit}, you started it",
            "eat {shit} and cry about it",
            "you and your clan can eat {shit}",
        ],
    ),
    (
        "stfu",
        "directed_profanity",
        [
            "{stfu} @kayla nobody asked",
            "omg {stfu} already",
            "{stfu} and play the objective",
            "can you {stfu} for five minutes",
            "{stfu} you're not even in the game",
            "just {stfu} lmao",
            "{stfu} noob",
            "@mike {stfu} about your rank",
            "seriously {stfu}, it's 3am and you're on mic",
            "{stfu} before I mute you",
            "shut the {fuck} up @dan, nobody cares",
        ],
    ),
    (
        "gtfo",
        "directed_profanity",
        [
            "{gtfo} of my lobby",
            "@noobmaster {gtfo}",
            "{gtfo} with that weak excuse",
            "{gtfo} scammer",
            "you again? {gtfo}",
            "{gtfo} my server, nobody invited you",
            "lol {gtfo} here",
            "get the {fuck} out of my stream",
            "{gtfo} troll 🤡",
            "{gtfo} and don't come back",
        ],
    ),
    (
        "you piece of shit",
        "directed_profanity",
        [
            "you {piece of shit}, you stole my kill",
            "@tyler you piece of {shit}",
            "what a piece of {shit} you are",
            "you're a lying piece of {shit}",
            "ur a {piece of shit} and everyone knows it",
            "you absolute piece of {shit}",
            "you little piece of {shit}, give it back",
            "shut up you {piece of shit}",
            "you are such a {piece of shit} to your sister",
            "you worthless piece of {shit}",
        ],
    ),
    (
        "shut up",
        "directed_insult",
        [
            "{shut up} you clown",
            "@jess_22 {shut up}, you don't know anything",
            "oh {shut up} already",
            "{shut up} and sit down",
            "nobody asked, {shut up}",
            "{shut up} you muppet",
            "can you {shut up} for one round",
            "{shut up}, nerd",
            "just {shut up} @ravi",
            "{shut up} before you embarrass yourself more",
        ],
    ),
    (
        "you bitch",
        "directed_insult",
        [
            "@kayla you {bitch}, you blocked me for nothing",
            "you're such a {bitch} lol",
            "shut up you dumb {bitch}",
            "what a {bitch} you are",
            "u r a {bitch} and a liar",
            "ur a {bitch} for that",
            "you stupid {bitch}",
            "@mike you little {bitch}",
            "you are such a {bitch} to your friends",
            "{bitch}, you stole my spot",
            "don't talk to me like that, you {bitch}",
        ],
    ),
    (
        "son of a bitch",
        "directed_insult",
        [
            "you {son of a bitch}, that was my last life",
            "@tyler you son of a {bitch}",
            "you lying son of a {bitch}",
            "{son of a bitch}, you did it again",
            "you sneaky son of a {bitch} 😂",
            "you dirty son of a {bitch}",
            "come here you son of a {bitch}",
            "you {son of a bitch}",
            "what a son of a {bitch} you are",
            "@ravi you {son of a bitch}, give me my account back",
        ],
    ),
    (
        "you asshole",
        "directed_insult",
        [
            "you {asshole}, you knew I was low",
            "@dan you're an {asshole}",
            "what an {asshole} you are",
            "ur an {asshole} and a cheater",
            "you are such an {asshole} to new players",
            "don't be an {asshole}, give it back",
            "shut up you {asshole}",
            "@ravi you complete {asshole}",
            "u r an {asshole}, blocked",
            "you {asshole} you ate my lunch",
        ],
    ),
    (
        "you dumbass",
        "directed_insult",
        [
            "you {dumbass}, wrong lane",
            "@noobmaster you're a {dumbass}",
            "what a {dumbass} you are, lmao",
            "ur such a {dumbass}",
            "you are a {dumbass} if you believe that",
            "shut up you {dumbass}",
            "you {dumbass} you pushed to main",
            "you absolute {dumbass}",
            "{dumbass}es like you shouldn't be allowed to drive",
            "u r a {dumbass}",
        ],
    ),
    (
        "you jackass",
        "directed_insult",
        [
            "you {jackass}, you spilled my drink",
            "@tyler quit being a {jackass}",
            "what a {jackass} you are",
            "you're a {jackass} and everyone knows it",
            "shut up you {jackass}",
            "you total {jackass}",
            "ur a {jackass} lol",
            "you are such a {jackass} sometimes",
            "move, you {jackass}, I'm parking here",
            "{jackass}es like you ruin the server",
        ],
    ),
    (
        "you idiot",
        "directed_insult",
        [
            "you {idiot}, you sold the wrong stock",
            "@mike you're an {idiot}",
            "what an {idiot} you are",
            "u r an {idiot}",
            "ur an {idiot} fr",
            "you dense {idiot}",
            "shut up you {idiot}",
            "you are such an {idiot}, read the rules",
            "are you an {idiot} or just pretending?",
            "you complete {idiot}, you deleted the save",
            "@kayla you {idiot}",
        ],
    ),
    (
        "you moron",
        "directed_insult",
        [
            "you {moron}, that's the enemy base",
            "@chris.b you're a {moron}",
            "what a {moron} you are",
            "ur a {moron} bro",
            "you are such a {moron}",
            "{moron}s like you make this game unplayable",
            "shut up you {moron}",
            "you absolute {moron}",
            "u r a {moron}, google it",
            "listen here you {moron}",
        ],
    ),
    (
        "you imbecile",
        "directed_insult",
        [
            "you {imbecile}, read the manual",
            "@dan you're an {imbecile}",
            "what an {imbecile} you are",
            "you are such an {imbecile}",
            "ur an {imbecile}",
            "shut up you {imbecile}",
            "you utter {imbecile}",
            "{imbecile}s like you voted for this",
            "you bumbling {imbecile}",
            "listen, you {imbecile}, nobody asked",
        ],
    ),
    (
        "you loser",
        "directed_insult",
        [
            "you {loser}, go touch grass",
            "@xXsniperXx you're such a {loser}",
            "what a {loser} you are",
            "ur a {loser} lol",
            "u r a {loser} with no friends",
            "you are a {loser} and always will be",
            "shut up you {loser}",
            "{loser}s like you cry every match",
            "imagine being this much of a {loser}, @tyler",
            "@jess_22 {loser}",
        ],
    ),
    (
        "you cunt",
        "directed_insult",
        [
            "you {cunt}, you did that on purpose",
            "@tyler you dumb {cunt}",
            "you're a {cunt} mate",
            "what a {cunt} you are",
            "shut up you {cunt}",
            "ur a {cunt}",
            "you absolute {cunt}",
            "you are such a {cunt} to her",
            "get lost you {cunt}",
            "you miserable {cunt}",
        ],
    ),
    (
        "you twat",
        "directed_insult",
        [
            "you {twat}, you locked us out",
            "@ravi you're a {twat}",
            "what a {twat} you are",
            "shut up you {twat}",
            "ur such a {twat}",
            "you absolute {twat}",
            "you are a massive {twat}",
            "{twat}s like you ruin forums",
            "oi, you {twat}, watch where you're going",
            "u r a {twat}",
        ],
    ),
    (
        "you dick",
        "directed_insult",
        [
            "you {dick}, give me back my controller",
            "@mike don't be a {dick}",
            "you're such a {dick}",
            "what a {dick} you are",
            "ur a {dick} lol",
            "u r a {dick} to everyone",
            "shut up you {dick}",
            "you are a {dick}, you know that?",
            "you selfish {dick}",
            "{dick}s like you hog the ball",
        ],
    ),
    (
        "you dickhead",
        "directed_insult",
        [
            "you {dickhead}, you parked in my spot",
            "@dan you're a {dickhead}",
            "what a {dickhead} you are",
            "shut up you {dickhead}",
            "ur a {dickhead} fr",
            "you are such a {dickhead}",
            "you absolute {dickhead}",
            "{dickhead}s like you shouldn't drive",
            "oi {dickhead}, read the chat",
            "u r a {dickhead}",
        ],
    ),
    (
        "you prick",
        "directed_insult",
        [
            "you {prick}, you kicked me for no reason",
            "@chris.b you're a {prick}",
            "what a {prick} you are",
            "shut up you {prick}",
            "ur such a {prick}",
            "you smug {prick}",
            "you are an arrogant {prick}",
            "{prick}s like you give mods a bad name",
            "u r a {prick}",
            "cheers for nothing, you {prick}",
        ],
    ),
    (
        "you bastard",
        "directed_insult",
        [
            "you {bastard}, that was my pizza",
            "@tyler you sneaky {bastard}",
            "you're a {bastard}",
            "what a {bastard} you are",
            "shut up you {bastard}",
            "ur a {bastard} for that",
            "you cheating {bastard}",
            "you are such a {bastard} to her",
            "{bastard}s like you should be banned",
            "u r a {bastard}",
        ],
    ),
    (
        "you whore",
        "directed_insult",
        [
            "you {whore}, stop begging for likes",
            "@kayla you're a {whore}",
            "what a {whore} you are",
            "shut up you {whore}",
            "ur a {whore}",
            "you attention {whore}",
            "you are such a {whore}",
            "u r a {whore} lol",
            "nobody likes you, you {whore}",
            "{whore}s like you ruin the app",
        ],
    ),
    (
        "you slut",
        "directed_insult",
        [
            "you {slut}, delete that comment",
            "@jess_22 you're a {slut}",
            "what a {slut} you are",
            "shut up you {slut}",
            "ur a {slut}",
            "you are such a {slut}",
            "u r a {slut}",
            "you dirty {slut}",
            "go away you {slut}",
            "{slut}s like you get blocked",
        ],
    ),
    (
        "you scumbag",
        "directed_insult",
        [
            "you {scumbag}, you scammed me",
            "@noobmaster you're a {scumbag}",
            "what a {scumbag} you are",
            "shut up you {scumbag}",
            "ur a {scumbag}",
            "you are such a {scumbag}",
            "you lying {scumbag}",
            "{scumbag}s like you sell stolen accounts",
            "u r a {scumbag}",
            "give back the money, you {scumbag}",
        ],
    ),
    (
        "you clown",
        "directed_insult",
        [
            "you {clown}, you fell for it",
            "@mike you're a {clown}",
            "what a {clown} you are 🤡",
            "shut up you {clown}",
            "ur a {clown} lmao",
            "you are such a {clown}",
            "u r a {clown}",
            "{clown}s like you run this server",
            "sit down, you {clown}",
            "you absolute {clown}",
        ],
    ),
    (
        "you pathetic",
        "directed_insult",
        [
            "you're {pathetic}",
            "you {pathetic} little worm",
            "@dan you are so {pathetic}",
            "how {pathetic} are you?",
            "ur {pathetic} lol",
            "u r {pathetic}",
            "you {pathetic} excuse for a player",
            "what a {pathetic} loser you are",
            "you're honestly {pathetic}",
            "shut up you {pathetic} clown",
        ],
    ),
    (
        "you worthless",
        "directed_insult",
        [
            "you're {worthless}",
            "you {worthless} piece of trash",
            "@ravi you are {worthless}",
            "ur {worthless} on this team",
            "u r {worthless}",
            "you {worthless} noob, uninstall",
            "you are completely {worthless}",
            "what a {worthless} human you are",
            "shut up you {worthless} bot",
            "you {worthless} sack of garbage",
        ],
    ),
    (
        "trash like you",
        "directed_insult",
        [
            "{trash} like you shouldn't be allowed online",
            "@tyler {trash} like you get banned every week",
            "nobody wants {trash} like you here",
            "{trash} like you is why we can't have nice things",
            "i don't play with {trash} like you",
            "{trash} like you belong in bronze",
            "go away, {trash} like you ruin everything",
            "{trash} like you never learn",
            "{trash} like u always blame lag",
            "we don't need {trash} like you in this guild",
        ],
    ),
    (
        "idiots like you",
        "directed_insult",
        [
            "{idiot}s like you are ruining this sub",
            "@mike {idiot}s like you",
            "this is why {idiot}s like you get muted",
            "{idiot}s like you shouldn't vote",
            "I'm so tired of {idiot}s like you",
            "{idiot}s like you make me hate the internet",
            "honestly {idiot}s like you deserve the ban",
            "nobody listens to {idiot}s like you",
            "{idiot}s like you never read the pinned post",
            "{idiot}s like u, every single day",
        ],
    ),
    (
        "people like you are garbage",
        "directed_insult",
        [
            "people like you are {garbage}",
            "@dan people like you are {garbage}, honestly",
            "people like you are absolute {garbage}",
            "people like you are {garbage} and you know it",
            "ngl people like you are {garbage}",
            "people like you are {garbage} human beings",
            "face it, people like you are {garbage}",
            "people like you are {garbage} 🗑️",
            "people like u are {garbage}",
            "people like you are {garbage}, go away",
        ],
    ),
    (
        "you retard",
        "slur_at_person",
        [
            "you {retard}, you walked into the zone",
            "@noobmaster you're a {retard}",
            "what a {retard} you are",
            "shut up you {retard}",
            "ur a {retard}",
            "u r a {retard} lol",
            "you are such a {retard}",
            "{retard}s like you shouldn't play ranked",
            "you absolute {retard}",
            "@kayla you {retard}",
        ],
    ),
    (
        "you faggot",
        "slur_at_person",
        [
            "you {faggot}, stop crying",
            "@tyler you're a {faggot}",
            "shut up you {faggot}",
            "what a {faggot} you are",
            "ur a {faggot}",
            "u r a {faggot}",
            "you are such a {faggot}",
            "{faggot}s like you get kicked",
            "get out you {faggot}",
            "@chris.b you {faggot}",
        ],
    ),
    (
        "you fag",
        "slur_at_person",
        [
            "you {fag}, you can't aim",
            "@dan you're a {fag}",
            "shut up you {fag}",
            "what a {fag} you are",
            "ur a {fag}",
            "u r a {fag}",
            "lol you {fag}",
            "go cry, you {fag}",
            "you little {fag}",
            "@xXsniperXx {fag}",
        ],
    ),
    (
        "you tranny",
        "slur_at_person",
        [
            "you {tranny}, nobody wants you here",
            "@jess_22 you're a {tranny}",
            "shut up you {tranny}",
            "what a {tranny} you are",
            "ur a {tranny}",
            "u r a {tranny}",
            "you are a {tranny} and a freak",
            "{tranny}s like you should be banned",
            "get lost you {tranny}",
            "@kayla {tranny}",
        ],
    ),
    (
        "you nigger",
        "slur_at_person",
        [
            "you {nigger}, get off my server",
            "@ravi you're a {nigger}",
            "shut up you {nigger}",
            "what a {nigger} you are",
            "ur a {nigger}",
            "u r a {nigger}",
            "you are such a {nigger}",
            "{nigger}s like you get banned",
            "go away you {nigger}",
            "@mike {nigger}",
        ],
    ),
    (
        "fuck",
        "bare_profanity",
        [
            "{fuck}, I missed the bus again",
            "oh {fuck}, I left the oven on",
            "{fuck} this weather honestly",
            "{fuck} yes, we won!!",
            "{fuck}, forgot my charger at home",
            "my code compiled first try, what the {fuck}",
            "{for fuck's sake}, the printer jammed again",
            "{fuck my life}, the exam got moved to tomorrow",
            "this climb is hard {as fuck}",
            "{fuck}! stubbed my toe on the table",
        ],
    ),
    (
        "shit",
        "bare_profanity",
        [
            "holy {shit}, did you see that goal?",
            "{shit}, I forgot my keys",
            "this {shit} is hard",
            "oh {shit} it's already 9",
            "no {shit}, the servers are down again",
            "the wifi here is a pile of {shit}",
            "{shit} happens, we'll try again tomorrow",
            "this song is the {shit} 🔥",
            "{shit}! the cat knocked my coffee over",
        ],
    ),
    (
        "damn",
        "bare_profanity",
        [
            "{damn}, that's good pizza",
            "{damn} it, the train is late again",
            "oh {damn}, I forgot it's Sunday",
            "{damn} this traffic",
            "well {damn}, that was a plot twist",
            "{damn} that sunset is gorgeous",
            "{damn}, my phone died",
            "it's so {damn} cold today",
            "{damn} right I'm going to the concert",
        ],
    ),
    (
        "crap",
        "bare_profanity",
        [
            "holy {crap}, look at the size of that dog",
            "oh {crap}, I left my wallet in the cab",
            "this printer is a piece of {crap}",
            "{crap}, the meeting moved to 8am",
            "the weather today is {crap}",
            "{crap} I forgot to save",
            "what a load of {crap} this update is",
            "{crap}, we're out of milk",
            "that movie was total {crap} lol",
        ],
    ),
    (
        "bullshit",
        "bare_profanity",
        [
            "that penalty was {bullshit}",
            "this patch is complete {bullshit}",
            "{bullshit}, there's no way that's legal",
            "the new parking rules are {bullshit}",
            "what a load of {bullshit} from the airline",
            "the lag is {bullshit} tonight",
            "paying extra for checked bags is {bullshit}",
            "that ending was {bullshit} 😤",
            "this homework is {bullshit}",
        ],
    ),
    (
        "wtf",
        "bare_profanity",
        [
            "{wtf} is this weather",
            "{wtf} just happened to the servers",
            "{wtf}, my flight got cancelled",
            "{what the fuck} is this new UI",
            "{wtf} why is the shop closed on a tuesday",
            "lol {wtf} did I just watch",
            "{what the fuck}, it's snowing in April",
            "{wtf} is wrong with this printer",
            "{wtf} 😂 that cat just opened the door",
        ],
    ),
    (
        "fucking",
        "bare_profanity",
        [
            "this is {fucking} amazing",
            "I'm so {fucking} tired today",
            "the {fucking} bus is late again",
            "{fucking} finally, the package arrived",
            "this game is {fucking} hard",
            "it's {fucking} freezing outside",
            "that was {fucking} delicious",
            "my {fucking} laptop crashed again",
            "so {fucking} proud of my sister today",
        ],
    ),
    (
        "shitty",
        "bare_profanity",
        [
            "what a {shitty} day",
            "{shitty} weather again",
            "this {shitty} wifi keeps dropping",
            "I had a {shitty} night's sleep",
            "the hotel was kinda {shitty} tbh",
            "my {shitty} old car finally died",
            "{shitty} service at that restaurant",
            "sorry for the {shitty} photo quality",
            "feeling {shitty} today, staying in",
        ],
    ),
]

# ---- lexical disguises: whole spans (abbreviation, some misspellings) and words ----

ABBREVIATION = {
    "fuck you": ["fu", "FU"],
    "go fuck yourself": ["gfy", "GFY"],
    "piece of shit": ["pos", "POS"],
    "son of a bitch": ["SOB", "sob"],
    "bullshit": ["bs", "BS"],
    "for fuck's sake": ["ffs", "FFS"],
    "fuck my life": ["fml"],
    "as fuck": ["af", "asf"],
    "what the fuck": ["wtf", "WTF"],
    "asshole": ["a-hole", "ahole"],
    "fucking": ["fkn", "fkin"],
}

PHRASE_MISSPELLING = {
    "shut up": ["shaddup", "shuddup", "shutup", "shattap"],
    "son of a bitch": ["sonuvabitch", "sumbitch", "sonofabitch"],
}

MISSPELLING = {
    "fuck": ["fuk", "fck", "phuck", "fuq", "fukk"],
    "fucking": ["fuckin", "fukin", "fucken", "fcking", "fuking"],
    "shit": ["sht", "shyt", "shiet"],
    "shitty": ["shity", "shittie", "shyty"],
    "bullshit": ["bullsht", "bulshit", "bullshyt"],
    "damn": ["dayum", "damm", "dammn"],
    "crap": ["crp", "krap", "crapp"],
    "screw": ["skrew", "scru", "screww"],
    "bitch": ["biatch", "bytch", "bich", "biotch", "beyotch"],
    "asshole": ["azzhole", "ashole", "asshol", "assole"],
    "dumbass": ["dumass", "dumbas", "dumazz"],
    "jackass": ["jackas", "jakass", "jackazz"],
    "cunt": ["kunt", "cvnt", "cnt"],
    "twat": ["twatt", "twadd"],
    "dick": ["dik", "dikk", "dic"],
    "dickhead": ["dikhead", "dickhed", "dikhed"],
    "prick": ["prik", "prikk"],
    "bastard": ["basterd", "bastid", "bastad", "bastird"],
    "whore": ["hore", "whor", "whoar"],
    "slut": ["slutt", "sluht", "slvt"],
    "scumbag": ["skumbag", "scumbagg", "scumbg"],
    "clown": ["klown", "clwn", "clownn"],
    "idiot": ["idiut", "idot", "idjit", "idoit"],
    "moron": ["moran", "morron", "moronn"],
    "imbecile": ["imbecil", "imbicile", "imbecille"],
    "loser": ["looser", "luser", "losr"],
    "retard": ["retart", "retrd", "reetard"],
    "faggot": ["fagot", "faggit", "fagit", "faget"],
    "fag": ["phag", "fagg"],
    "tranny": ["trany", "trannie", "trannee"],
    "nigger": ["niggr", "niggur", "niqqer"],
    "pathetic": ["pathetik", "patheticc", "pathedic"],
    "worthless": ["worthles", "wurthless", "worthlss"],
    "trash": ["trassh", "trsh"],
    "garbage": ["garbige", "garbaje", "garbadge"],
}

MASK = {
    "fuck": ["f*ck", "f**k", "f#ck", "fu*k", "f***"],
    "fucking": ["f*cking", "f**king", "f***ing", "fu*king"],
    "shit": ["sh*t", "s**t", "sh#t", "sh**"],
    "shitty": ["sh*tty", "s**tty"],
    "bullshit": ["bullsh*t", "bulls**t", "b*llsh*t"],
    "damn": ["d*mn", "d**n", "da*n"],
    "crap": ["cr*p", "c**p"],
    "screw": ["scr*w", "sc**w"],
    "stfu": ["st*u", "stf*"],
    "gtfo": ["gt*o", "g**o"],
    "wtf": ["wt*", "w*f"],
    "bitch": ["b*tch", "b**ch", "bi*ch", "b#tch"],
    "asshole": ["a**hole", "assh*le", "a**h*le"],
    "dumbass": ["dumba**", "dumb*ss"],
    "jackass": ["jacka**", "jack*ss"],
    "cunt": ["c*nt", "c**t", "cu*t"],
    "twat": ["tw*t", "tw#t"],
    "dick": ["d*ck", "d**k", "di*k"],
    "dickhead": ["d*ckhead", "d**khead", "dickh*ad"],
    "prick": ["pr*ck", "pr**k"],
    "bastard": ["b*stard", "b*st*rd", "bast*rd"],
    "whore": ["wh*re", "wh**e", "w***e"],
    "slut": ["sl*t", "sl#t"],
    "scumbag": ["sc*mbag", "scumb*g"],
    "clown": ["cl*wn", "cl**n"],
    "idiot": ["id*ot", "idi*t", "i*iot"],
    "moron": ["m*ron", "mor*n"],
    "imbecile": ["imb*cile", "imbec*le"],
    "loser": ["l*ser", "los*r"],
    "retard": ["r*tard", "ret*rd", "r*t*rd"],
    "faggot": ["f*ggot", "f**got", "fagg*t"],
    "fag": ["f*g"],
    "tranny": ["tr*nny", "tr**ny", "tra**y"],
    "nigger": ["n*gger", "n**ger", "n****r", "ni**er"],
    "pathetic": ["path*tic", "p*thetic"],
    "worthless": ["worthl*ss", "w*rthless"],
    "trash": ["tr*sh"],
    "garbage": ["garb*ge", "g*rbage"],
}

# the words that word-level disguises touch; "you", "off", "up" and so on stay plain
VOCAB = sorted(set(MISSPELLING) | set(MASK) | {"shut"}, key=len, reverse=True)
PLAIN_WORDS = {
    "you",
    "u",
    "off",
    "up",
    "of",
    "a",
    "the",
    "my",
    "for",
    "sake",
    "as",
    "what",
    "go",
    "yourself",
    "piece",
    "son",
    "out",
    "life",
}

LEET = {"a": ["4", "@"], "e": ["3"], "i": ["1", "!"], "o": ["0"], "s": ["$", "5"], "t": ["7"]}
LEET_FALLBACK = {"u": ["|_|"], "c": ["("], "k": ["|<"]}
LEET_UNDO = [
    ("|_|", "u"),
    ("|<", "k"),
    ("(", "c"),
    ("4", "a"),
    ("@", "a"),
    ("3", "e"),
    ("1", "i"),
    ("!", "i"),
    ("0", "o"),
    ("$", "s"),
    ("5", "s"),
    ("7", "t"),
]

HOMOGLYPH = {
    "homoglyph_cyrillic": {
        "a": "а",
        "c": "с",
        "e": "е",
        "o": "о",
        "p": "р",
        "x": "х",
        "y": "у",
        "i": "і",
        "s": "ѕ",
        "j": "ј",
        "h": "һ",
        "k": "к",
        "d": "ԁ",
        "l": "ӏ",
        "w": "ԝ",
        "q": "ԛ",
        "A": "А",
        "B": "В",
        "C": "С",
        "E": "Е",
        "H": "Н",
        "I": "І",
        "K": "К",
        "M": "М",
        "O": "О",
        "P": "Р",
        "S": "Ѕ",
        "T": "Т",
        "X": "Х",
    },
    "homoglyph_greek": {
        "a": "α",
        "i": "ι",
        "k": "κ",
        "n": "η",
        "o": "ο",
        "p": "ρ",
        "t": "τ",
        "u": "υ",
        "v": "ν",
        "x": "χ",
        "y": "γ",
        "e": "ε",
        "A": "Α",
        "B": "Β",
        "E": "Ε",
        "H": "Η",
        "I": "Ι",
        "K": "Κ",
        "M": "Μ",
        "N": "Ν",
        "O": "Ο",
        "P": "Ρ",
        "T": "Τ",
        "X": "Χ",
        "Y": "Υ",
        "Z": "Ζ",
    },
    "homoglyph_armenian": {
        "u": "ս",
        "o": "օ",
        "h": "հ",
        "n": "ո",
        "g": "ց",
        "q": "զ",
        "O": "Օ",
        "U": "Ս",
    },
}
HOMOGLYPH_UNDO = {v: k for table in HOMOGLYPH.values() for k, v in table.items()}

ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
MIXED_SEPARATORS = [".", "-", "_", "/", "~", " ", ","]
SEPARATOR_CHARS = set(".-_/~, '")
OVERLAYS = [0x336, 0x335, 0x337, 0x338, 0x332]

SINGLES = [
    "plain",
    "separator_space",
    "separator_dot",
    "separator_mixed",
    "mask_symbol",
    "leetspeak",
    "homoglyph_cyrillic",
    "homoglyph_greek",
    "homoglyph_armenian",
    "zero_width",
    "fullwidth",
    "math_bold",
    "math_double_struck",
    "repeated_letters",
    "case_mixing",
    "misspelling",
    "abbreviation",
    "combining_marks",
]
COMBOS = [
    "leetspeak+zero_width",
    "leetspeak+case_mixing",
    "mask_symbol+zero_width",
    "mask_symbol+case_mixing",
    "misspelling+leetspeak",
    "misspelling+separator_dot",
    "misspelling+case_mixing",
    "misspelling+repeated_letters",
    "repeated_letters+case_mixing",
    "repeated_letters+zero_width",
    "repeated_letters+homoglyph_greek",
    "homoglyph_cyrillic+zero_width",
    "homoglyph_cyrillic+separator_space",
    "homoglyph_armenian+zero_width",
    "fullwidth+zero_width",
    "math_bold+separator_space",
    "math_double_struck+zero_width",
    "case_mixing+separator_mixed",
    "separator_space+combining_marks",
    "abbreviation+separator_dot",
    "abbreviation+case_mixing",
    "leetspeak+homoglyph_cyrillic+zero_width",
]
COMBO_SHARE = 0.28
MAX_ABBREVIATED = 3


class NotApplicable(Exception):
    """The technique cannot visibly change this span."""


# ---- helpers ----


def split_vocab(word: str) -> tuple[str, str, str] | None:
    """("", "idiot", "s") for "idiots": the longest vocabulary word the word starts with."""
    low = word.lower()
    for key in VOCAB:
        if low.startswith(key):
            return "", word[: len(key)], word[len(key) :]
    return None


def on_vocab_words(span: str, fn) -> str:
    """Apply fn to the vocabulary part of every word; NotApplicable if nothing changed."""
    out, changed = [], False
    for word in span.split(" "):
        parts = split_vocab(word)
        if parts is not None:
            _, core, rest = parts
        elif word.lower() not in PLAIN_WORDS:
            core, rest = word, ""  # a vocabulary word already disguised by a lexical step
        else:
            out.append(word)
            continue
        new = fn(core)
        changed = changed or new != core
        out.append(new + rest)
    if not changed:
        raise NotApplicable
    return " ".join(out)


def fold(
    ch: str,
    base: int,
    upper_base: int | None = None,
    digit_base: int | None = None,
    exceptions: dict[str, str] | None = None,
) -> str:
    if exceptions and ch in exceptions:
        return exceptions[ch]
    if "a" <= ch <= "z":
        return chr(base + ord(ch) - ord("a"))
    if "A" <= ch <= "Z" and upper_base is not None:
        return chr(upper_base + ord(ch) - ord("A"))
    if "0" <= ch <= "9" and digit_base is not None:
        return chr(digit_base + ord(ch) - ord("0"))
    return ch


DOUBLE_STRUCK_CAPS = {"C": "ℂ", "H": "ℍ", "N": "ℕ", "P": "ℙ", "Q": "ℚ", "R": "ℝ", "Z": "ℤ"}


# ---- techniques: each takes (span, rng) and returns the new span ----


def t_plain(span: str, rng: random.Random) -> str:
    return span


def t_abbreviation(span: str, rng: random.Random) -> str:
    forms = ABBREVIATION.get(span.lower())
    if not forms:
        raise NotApplicable
    return rng.choice(forms)


def t_misspelling(span: str, rng: random.Random) -> str:
    if span.lower() in PHRASE_MISSPELLING:
        return rng.choice(PHRASE_MISSPELLING[span.lower()])

    def one(core: str) -> str:
        forms = MISSPELLING.get(core.lower())
        return rng.choice(forms) if forms else core

    return on_vocab_words(span, one)


def t_mask(span: str, rng: random.Random) -> str:
    def one(core: str) -> str:
        forms = MASK.get(core.lower())
        return rng.choice(forms) if forms else core

    return on_vocab_words(span, one)


def t_leet(span: str, rng: random.Random) -> str:
    def one(core: str) -> str:
        chars = list(core)
        spots = [i for i, c in enumerate(chars) if c.lower() in LEET]
        table = LEET
        if not spots:
            spots = [i for i, c in enumerate(chars) if c.lower() in LEET_FALLBACK]
            table = LEET_FALLBACK
        if not spots:
            return core
        cap = max(1, round(len(spots) * 0.75))
        chosen = [i for i in spots if rng.random() < 0.6][:cap] or [rng.choice(spots)]
        for i in chosen:
            chars[i] = rng.choice(table[chars[i].lower()])
        return "".join(chars)

    return on_vocab_words(span, one)


def make_homoglyph(name: str):
    table = HOMOGLYPH[name]

    def technique(span: str, rng: random.Random) -> str:
        def one(core: str) -> str:
            chars = list(core)
            spots = [i for i, c in enumerate(chars) if c in table]
            if not spots:
                return core
            chosen = [i for i in spots if rng.random() < 0.6] or [rng.choice(spots)]
            for i in chosen:
                chars[i] = table[chars[i]]
            return "".join(chars)

        return on_vocab_words(span, one)

    return technique


def t_zero_width(span: str, rng: random.Random) -> str:
    def one(core: str) -> str:
        if len(core) < 2:
            return core
        gaps = sorted(rng.sample(range(1, len(core)), min(len(core) - 1, rng.choice([1, 1, 2]))))
        out, last = [], 0
        for g in gaps:
            out.append(core[last:g])
            out.append(rng.choice(ZERO_WIDTH))
            last = g
        out.append(core[last:])
        return "".join(out)

    return on_vocab_words(span, one)


def t_repeated(span: str, rng: random.Random) -> str:
    def one(core: str) -> str:
        spots = [i for i, c in enumerate(core) if c.lower() in "aeiou"] or [len(core) - 1]
        two = len(spots) > 1 and len(core) >= 5 and rng.random() < 0.2
        chosen = set(rng.sample(spots, 2 if two else 1))
        return "".join(c * rng.randint(3, 6) if i in chosen else c for i, c in enumerate(core))

    return on_vocab_words(span, one)


def t_case_mixing(span: str, rng: random.Random) -> str:
    letters = [c for c in span if c.isalpha()]
    if len(letters) < 2:
        raise NotApplicable
    for _ in range(100):
        new = "".join(
            (c.upper() if rng.random() < 0.5 else c.lower()) if c.isalpha() else c for c in span
        )
        ls = [c for c in new if c.isalpha()]
        capitalised = ls[0].isupper() and all(c.islower() for c in ls[1:])
        if (
            any(c.isupper() for c in ls)
            and any(c.islower() for c in ls)
            and not capitalised
            and new != span
        ):
            return new
    raise NotApplicable


def t_fullwidth(span: str, rng: random.Random) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in span)


def t_math_bold(span: str, rng: random.Random) -> str:
    return "".join(fold(c, 0x1D41A, 0x1D400, 0x1D7CE) for c in span)


def t_math_double_struck(span: str, rng: random.Random) -> str:
    return "".join(fold(c, 0x1D552, 0x1D538, 0x1D7D8, DOUBLE_STRUCK_CAPS) for c in span)


def t_combining(span: str, rng: random.Random) -> str:
    if rng.random() < 0.5:
        mark = chr(rng.choice(OVERLAYS))
        return "".join(c + mark if c.isalnum() else c for c in span)
    marks = [m for m in range(0x300, 0x370) if m != 0x34F]
    out = []
    for c in span:
        out.append(c)
        if c.isalnum() and rng.random() < 0.8:
            out.extend(chr(rng.choice(marks)) for _ in range(rng.randint(1, 2)))
    return "".join(out)


def make_separator(kind: str):
    def technique(span: str, rng: random.Random) -> str:
        words = span.split(" ")
        if all(len(w) < 2 for w in words):
            raise NotApplicable
        out = []
        for word in words:
            units = list(word)
            if kind == "space":
                out.append(" ".join(units))
            elif kind == "dot":
                out.append(".".join(units))
            else:
                for _ in range(50):
                    seps = [rng.choice(MIXED_SEPARATORS) for _ in units[1:]]
                    if len(set(seps)) >= 2 or len(seps) < 2:
                        break
                out.append(units[0] + "".join(s + u for s, u in zip(seps, units[1:], strict=True)))
        return ("  " if kind == "space" else " ").join(out)

    return technique


TECHNIQUES = {
    "plain": t_plain,
    "abbreviation": t_abbreviation,
    "misspelling": t_misspelling,
    "mask_symbol": t_mask,
    "repeated_letters": t_repeated,
    "leetspeak": t_leet,
    "homoglyph_cyrillic": make_homoglyph("homoglyph_cyrillic"),
    "homoglyph_greek": make_homoglyph("homoglyph_greek"),
    "homoglyph_armenian": make_homoglyph("homoglyph_armenian"),
    "case_mixing": t_case_mixing,
    "fullwidth": t_fullwidth,
    "math_bold": t_math_bold,
    "math_double_struck": t_math_double_struck,
    "separator_space": make_separator("space"),
    "separator_dot": make_separator("dot"),
    "separator_mixed": make_separator("mixed"),
    "combining_marks": t_combining,
    "zero_width": t_zero_width,
}
LEXICAL = {"abbreviation", "misspelling", "mask_symbol"}


def apply(label: str, span: str, rng: random.Random) -> tuple[str, str]:
    """(lexical form, disguised span) for a technique label; NotApplicable if no change."""
    lexical = span
    out = span
    for name in label.split("+"):
        new = TECHNIQUES[name](out, rng)
        if name != "plain" and new == out:
            raise NotApplicable
        out = new
        if name in LEXICAL:
            lexical = out
    return lexical, out


# ---- the check: undo the disguise and compare with the lexical form ----


def squeeze(s: str) -> str:
    s = "".join(c for c in s if c not in SEPARATOR_CHARS)
    return re.sub(r"(.)\1+", r"\1", s)


def undo(s: str, label: str) -> str:
    s = "".join(c for c in s if unicodedata.category(c) != "Cf")
    s = unicodedata.normalize("NFKD", s)
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = unicodedata.normalize("NFKC", s)
    s = "".join(HOMOGLYPH_UNDO.get(c, c) for c in s).lower()
    if "leetspeak" in label:
        for old, new in LEET_UNDO:
            s = s.replace(old, new)
    return squeeze(s)


def check(span: str, lexical: str, disguised: str, label: str) -> None:
    names = label.split("+")
    assert undo(disguised, label) == squeeze(lexical.lower()), (span, disguised, label)
    if not LEXICAL & set(names):
        assert lexical == span
    if "abbreviation" in names:
        assert lexical in ABBREVIATION[span.lower()] or any(
            lexical.startswith(a) for a in ABBREVIATION[span.lower()]
        ), (span, lexical)
    if label != "plain":
        assert disguised != span, (span, label)
    assert all(ord(c) < 0x110000 for c in disguised)


# ---- writing ----


def escape_format_chars(line: str) -> str:
    out = []
    for c in line:
        if unicodedata.category(c) == "Cf":
            n = ord(c)
            if n > 0xFFFF:
                n -= 0x10000
                out.append(f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}")
            else:
                out.append(f"\\u{n:04x}")
        else:
            out.append(c)
    return "".join(out)


def choose(
    span: str, counts: Counter, rng: random.Random, abbreviate: bool
) -> tuple[str, str, str]:
    pool = COMBOS if rng.random() < COMBO_SHARE else SINGLES
    order = sorted(pool, key=lambda p: (counts[p], rng.random()))
    for label in [*order, *SINGLES]:
        if "abbreviation" in label and not abbreviate:
            continue
        sub = random.Random(rng.random())
        try:
            lexical, disguised = apply(label, span, sub)
        except NotApplicable:
            continue
        return label, lexical, disguised
    raise RuntimeError(f"no technique applies to {span!r}")


def build() -> list[dict[str, str]]:
    rng = random.Random(SEED)
    counts: Counter = Counter()
    rows = []
    for base, kind, sentences in CORPUS:
        abbreviated = 0
        for sentence in sentences:
            match = re.fullmatch(r"(.*)\{([^}]+)\}(.*)", sentence)
            assert match, sentence
            before, span, after = match.groups()
            # at most 3 abbreviated lines a base, so most keep the word visible
            label, lexical, disguised = choose(span, counts, rng, abbreviated < MAX_ABBREVIATED)
            abbreviated += "abbreviation" in label
            check(span, lexical, disguised, label)
            counts[label] += 1
            rows.append(
                {
                    "text": before + disguised + after,
                    "base": base,
                    "kind": kind,
                    "expect": EXPECT[kind],
                    "technique": label,
                }
            )
    return rows


def main() -> int:
    rows = build()
    lines = [escape_format_chars(json.dumps(r, ensure_ascii=False)) for r in rows]
    for line, row in zip(lines, rows, strict=True):
        assert json.loads(line) == row
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} lines to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
