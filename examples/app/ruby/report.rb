# Sales report (Ruby, sqlite3 gem). "SELECT 1" in a comment is ignored.
class Report
  def top_tracks(db, limit)
    db.execute <<~SQL, [limit]
      SELECT TrackId, Name, typeof(UnitPrice) AS kind
      FROM Track
      WHERE Composer IS NOT NULL
      ORDER BY TrackId
      LIMIT ?
    SQL
  end

  def ignore_dupes(db, id)
    db.execute('INSERT OR IGNORE INTO Artist (ArtistId, Name) VALUES (@id, @name)', id: id, name: "x")
  end
end
