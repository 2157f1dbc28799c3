-- Chinook query corpus for `replicator queries replay`: SQLite-dialect queries, each with the
-- classification the replay must give it. "same" means the translation returns exactly
-- SQLite's rows; "different" is a trap the translation cannot (or should not) hide and the
-- replay must catch; "failed" is one Postgres rejects; "skipped" is refused or not runnable.

-- name: like-case-insensitive
-- expect: different
-- SQLite's LIKE ignores ASCII case: 'the%' also finds "The ..."; Postgres LIKE does not.
SELECT TrackId, Name FROM Track WHERE Name LIKE 'the%' ORDER BY TrackId;

-- name: like-without-letters
-- expect: same
-- No letters in the pattern, so case cannot matter.
SELECT count(*) FROM Track WHERE Name LIKE '%(%';

-- name: integer-division
-- expect: same
-- bigint / integer truncates in both databases.
SELECT TrackId, Milliseconds / 60000 AS minutes FROM Track ORDER BY TrackId;

-- name: numeric-times-integer
-- expect: different
-- UnitPrice is REAL in SQLite (0.99*3 = 2.9699999999999998) and exact numeric in Postgres (2.97).
SELECT TrackId, UnitPrice * 3 FROM Track ORDER BY TrackId;

-- name: numeric-sum
-- expect: different
-- Summing 3503 binary floats accumulates rounding error; the numeric sum is exact.
SELECT sum(UnitPrice) FROM Track;

-- name: numeric-sum-rounded
-- expect: same
SELECT round(sum(UnitPrice), 2) FROM Track;

-- name: avg-of-integers
-- expect: same
-- The translation casts Postgres's numeric avg() to double precision, as SQLite returns.
SELECT avg(Milliseconds) FROM Track;

-- name: concat-with-null
-- expect: same
-- || gives NULL for a NULL Composer in both; the translation keeps || (concat() would not).
SELECT TrackId, Composer || ' (composer)' FROM Track ORDER BY TrackId;

-- name: strftime-year
-- expect: same
-- InvoiceDate is text in SQLite and timestamptz in Postgres; to_char in UTC gives the same text.
SELECT strftime('%Y', InvoiceDate) AS year, count(*) FROM Invoice GROUP BY year ORDER BY year;

-- name: strftime-codes
-- expect: same
SELECT InvoiceId, strftime('%Y-%m-%dT%H:%M:%S %j %w %s', InvoiceDate) FROM Invoice ORDER BY InvoiceId;

-- name: date-column-type
-- expect: different
-- The driver returns a datetime from Postgres where SQLite returned a string.
SELECT InvoiceId, InvoiceDate FROM Invoice ORDER BY InvoiceId LIMIT 5;

-- name: date-month-arithmetic
-- expect: different
-- 2022-08-31 +1 month is 2022-10-01 in SQLite and 2022-09-30 in Postgres.
SELECT InvoiceId, date(InvoiceDate, '+1 month') FROM Invoice ORDER BY InvoiceId;

-- name: date-text-between
-- expect: different
-- SQLite compares text: '2022-06-30 00:00:00' > '2022-06-30'; Postgres compares instants.
SELECT count(*) FROM Invoice WHERE InvoiceDate BETWEEN '2022-06-01' AND '2022-06-30';

-- name: julianday-unixepoch
-- expect: same
SELECT InvoiceId, julianday(InvoiceDate), unixepoch(InvoiceDate) FROM Invoice ORDER BY InvoiceId;

-- name: before-now
-- expect: same
SELECT count(*) FROM Invoice WHERE InvoiceDate < datetime('now', '+1 day');

-- name: group-concat-order
-- expect: different
-- SQLite walks IFK_AlbumArtistId (artist order); Postgres scans the heap: same pieces, other order.
SELECT group_concat(Title, '|') FROM Album WHERE ArtistId IN (1, 2);

-- name: group-concat-ordered-input
-- expect: same
SELECT group_concat(Name, ',') FROM (SELECT Name FROM Genre ORDER BY Name);

-- name: boolean-result
-- expect: different
-- A comparison is 1/0 in SQLite and true/false in Postgres.
SELECT TrackId, Milliseconds > 300000 AS long FROM Track ORDER BY TrackId;

-- name: integer-as-condition
-- expect: same
SELECT count(*) FROM Customer WHERE SupportRepId AND 1;

-- name: sum-of-comparison
-- expect: same
SELECT sum(Milliseconds > 300000) FROM Track;

-- name: ifnull-iif
-- expect: same
SELECT TrackId, ifnull(Composer, 'unknown'), iif(Milliseconds > 300000, 'long', 'short') FROM Track ORDER BY TrackId;

-- name: typeof
-- expect: same
SELECT typeof(Composer), typeof(UnitPrice), count(*) FROM Track GROUP BY 1, 2 ORDER BY 1, 2;

-- name: total
-- expect: same
SELECT total(Milliseconds), total(Bytes) FROM Track WHERE GenreId = 1;

-- name: limit-minus-one
-- expect: same
SELECT TrackId FROM Track ORDER BY TrackId LIMIT -1 OFFSET 3490;

-- name: scalar-max-with-null
-- expect: same
-- max(NULL, 'M') is NULL in SQLite; GREATEST ignores NULLs, so the translation adds a CASE.
SELECT TrackId, max(Composer, 'M'), min(Milliseconds, Bytes) FROM Track ORDER BY TrackId;

-- name: substr-negative
-- expect: same
SELECT TrackId, substr(Name, -4), substr(Name, -6, 3) FROM Track ORDER BY TrackId;

-- name: glob
-- expect: same
SELECT count(*) FROM Track WHERE Name GLOB 'The *' OR Name GLOB '*[0-9]';

-- name: collate-nocase
-- expect: same
SELECT ArtistId FROM Artist WHERE Name = 'ac/dc' COLLATE NOCASE;

-- name: double-quoted-string
-- expect: same
SELECT count(*) FROM Genre WHERE Name = "Rock";

-- name: rowid
-- expect: same
SELECT rowid, Name FROM Genre ORDER BY rowid;

-- name: cast-text-with-junk
-- expect: failed
-- SQLite reads the numeric prefix of 'H2G 1A7' (0); Postgres rejects it.
SELECT CustomerId, CAST(PostalCode AS INTEGER) FROM Customer ORDER BY CustomerId;

-- name: bare-column
-- expect: failed
-- SQLite returns Name from an arbitrary row of each group; Postgres refuses.
SELECT AlbumId, Name, count(*) FROM Track GROUP BY AlbumId;

-- name: group-by-primary-key
-- expect: same
SELECT g.GenreId, g.Name, count(*) FROM Genre g JOIN Track t ON t.GenreId = g.GenreId GROUP BY g.GenreId ORDER BY g.GenreId;

-- name: positional-parameter
-- expect: same
-- params: [1]
SELECT Name FROM Track WHERE AlbumId = ? ORDER BY TrackId;

-- name: named-parameters
-- expect: same
-- params: [1, 5]
SELECT count(*) FROM Track WHERE GenreId = :genre AND MediaTypeId <> :media OR GenreId = :genre;

-- name: needs-parameters
-- expect: skipped
SELECT Name FROM Track WHERE TrackId = ?;

-- name: write-is-refused
-- expect: skipped
DELETE FROM Track WHERE TrackId = 1;
