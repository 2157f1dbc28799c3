# The second migration: a new NOT NULL column with a default (SQLite: ALTER TABLE ADD COLUMN) and a
# changed column type (SQLite: Rails rebuilds the table through a temporary copy).
class AddStoreNicknameChangeReviewBody < ActiveRecord::Migration[6.1]
  def up
    add_column :stores, :nickname, :string, limit: 40, null: false, default: ""
    change_column :reviews, :body, :string, limit: 500
  end

  def down
    change_column :reviews, :body, :text
    remove_column :stores, :nickname
  end
end
